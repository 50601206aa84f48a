# unipan: the two set-up commands of the README, and a few conveniences.
#   make demo   create .venv, install, run the default pipeline end to end on the generated data set
#   make test   create .venv, install, run the test suite
#   make viz    the pipelines in kedro-viz (http://127.0.0.1:4141)
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

export KEDRO_DISABLE_TELEMETRY := 1
export DO_NOT_TRACK := 1
export MPLBACKEND := Agg
export PYTHONUNBUFFERED := 1

.PHONY: install demo test test-slow lint format benchmarks clean-data viz

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade --quiet pip
	# viz: kedro-viz, also used by tests/test_viz.py (builds the viz data of every pipeline)
	# fastpng: pywuffs, compiled at install; without a C++ compiler the project installs without it
	$(BIN)/python -m pip install --quiet -e '.[dev,viz,fastpng]' \
	  || { echo "pywuffs could not be built: PNG decoding uses pyspng"; $(BIN)/python -m pip install --quiet -e '.[dev,viz]'; }
	# panopticapi-lite (the `panopticapi` module) pins numpy<2. Resolved together with the rest, pip
	# falls back to numpy 1.26 and pandas 3.0, and adding it to an environment that already has pandas
	# 3.1 breaks pandas' import. Its code gives identical PQ results under numpy 2.x (checked on 24
	# cases, and our tests compare against it on every run), so it is installed last, without its deps.
	$(BIN)/python -m pip install --quiet --no-deps panopticapi-lite==0.2.0
	# pip check must pass, except for the two requirement lines of panopticapi-lite described above (its
	# numpy<2 pin and scikit-image, which its pq_compute never imports); any other line fails the install.
	@$(BIN)/python -m pip check > $(VENV)/pip-check.txt 2>&1; \
	  grep -v -E '^panopticapi-lite 0\.2\.0 (requires scikit-image, which is not installed|has requirement numpy<2\.0\.0,>=1\.23\.5, but you have numpy 2\.[0-9.]+)\.$$' \
	    $(VENV)/pip-check.txt > $(VENV)/pip-check-unexpected.txt; \
	  if [ -s $(VENV)/pip-check-unexpected.txt ]; then cat $(VENV)/pip-check-unexpected.txt; exit 1; fi
	@touch $(STAMP)

demo: install
	$(BIN)/kedro run

viz: install
	$(BIN)/kedro viz run --host 127.0.0.1 --port 4141

test: lint
	$(BIN)/python -m pytest -m "not slow"

test-slow: install
	$(BIN)/python -m pytest -m slow

# ruff check and ruff format --check; `make test` runs them first (so CI checks them)
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

benchmarks: install
	$(BIN)/python -m pip install --quiet -e '.[bench]'  # hotcoco, compared against in eval_speed.py
	$(BIN)/python benchmarks/training_throughput.py
	$(BIN)/python benchmarks/loader_throughput.py
	$(BIN)/python benchmarks/inference.py
	$(BIN)/python benchmarks/affinity.py
	$(BIN)/python benchmarks/eval_speed.py
