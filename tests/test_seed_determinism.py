"""A seed controls the run (issue 11, item 0), across processes, on the real network and training glue.

* Two trainings with the same seed and ``deterministic: true``, each in its own fresh python process (so a
  different hash seed, fresh RNGs, fresh DataLoader workers), end with bit-identical weights and losses.
* A training killed with SIGKILL at a random moment between two checkpoints, then rerun in a new process with
  the same arguments, resumes and ends with the weights of the uninterrupted run.
* The augmentation of a sample does not depend on the thread count of the process that computes it (DataLoader
  workers run on one thread, ``num_workers: 0`` on the main process's threads).

The jobs are ``tests/seeded_training_job.py`` (the glue's :func:`train_experiment` on 4 generated 64x128
images, a tiny model, 5 steps, a checkpoint after each step, one DataLoader worker, one torch thread).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from unipan_pipeline.data import PanopticDataset, PanopticTransform, TransformConfig, load_ingested
from unipan_pipeline.data.cityscapes import ingest_cityscapes
from unipan_pipeline.synthetic import generate_cityscapes_tree
from unipan_pipeline.training.checkpoint import list_checkpoints
from unipan_pipeline.training.sampler import InfiniteShardedSampler, SeededDataset

ROOT = Path(__file__).resolve().parents[1]
JOB = Path(__file__).resolve().parent / "seeded_training_job.py"
ITERATIONS = 5
SEED = 3


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the generated + ingested tiny data set (``data/ingested``) and an MLflow store."""
    work = tmp_path_factory.mktemp("seeded")
    raw, ingested = work / "data" / "raw", work / "data" / "ingested"
    generate_cityscapes_tree(
        root=raw, splits={"train": 4, "val": 1}, height=64, width=128, seed=0, progress=False, workers=1
    )
    ingest_cityscapes(raw, ingested, ["train", "val"], verify_images="none", source="synthetic")
    return work


def _job(work: Path, out: str, seed: int = SEED) -> list[str]:
    data = (work / "data" / "ingested").as_posix()
    return [sys.executable, str(JOB), "--data", data, "--out", str(work / out), "--seed", str(seed),
            "--iterations", str(ITERATIONS)]  # fmt: skip


def _env(work: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "MLFLOW_REGISTRY_URI")}
    env.pop("PYTHONHASHSEED", None)  # every process gets its own string hashes (set orders)
    return {**env, "OMP_NUM_THREADS": "1", "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}"}


def _run_job(work: Path, out: str, seed: int = SEED) -> dict[str, Any]:
    proc = subprocess.run(
        _job(work, out, seed),
        cwd=work,
        env=_env(work),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((work / out / "manifest.json").read_text())


def _weights(work: Path, out: str) -> dict[str, torch.Tensor]:
    return torch.load(work / out / "model.pt", weights_only=True)


def _losses(work: Path, out: str) -> list[float]:
    curves = json.loads((work / out / "checkpoints" / "curves.json").read_text())
    return [row["train/loss"] for row in curves["train"]]


def _differing(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[str]:
    assert a.keys() == b.keys()
    return [k for k in a if not torch.equal(a[k], b[k])]


@pytest.fixture(scope="module")
def reference(workdir: Path) -> dict[str, Any]:
    """The uninterrupted run, in its own process: its manifest and its wall time."""
    t0 = time.perf_counter()
    manifest = _run_job(workdir, "reference")
    return {"manifest": manifest, "wall_s": time.perf_counter() - t0}


def test_same_seed_in_two_processes_gives_bit_identical_weights(workdir: Path, reference: dict) -> None:
    again = _run_job(workdir, "again")
    assert reference["manifest"]["start_iteration"] == again["start_iteration"] == 0
    assert again["iterations"] == ITERATIONS
    ref, other = _weights(workdir, "reference"), _weights(workdir, "again")
    assert _differing(ref, other) == [], "same seed, deterministic: true, two processes: weights differ"
    assert _losses(workdir, "reference") == _losses(workdir, "again")
    # the comparison can fail: the runs trained (the weights moved away from the seeded initialisation)
    # and the seed matters (another seed initialises differently)
    from unipan_pipeline.model import ModelConfig, build_model  # noqa: PLC0415
    from unipan_pipeline.training.trainer import seed_everything  # noqa: PLC0415

    categories = load_ingested(workdir / "data" / "ingested", "train").categories
    config = ModelConfig.from_dict(reference["manifest"]["model_config"])
    inits = []
    for seed in (SEED, SEED + 1):
        seed_everything(seed)
        inits.append(build_model(config, categories).state_dict())
    trained = [k for k in _differing(ref, inits[0]) if ref[k].is_floating_point()]
    assert len(trained) > len(ref) // 2, "training did not change the weights"
    assert _differing(inits[0], inits[1]), "the seed does not change the initial weights"


def test_sigkill_at_a_random_moment_then_rerun_ends_with_the_same_weights(
    workdir: Path, reference: dict
) -> None:
    kill_seed = int(os.environ.get("UNIPAN_KILL_SEED", time.time_ns() % 100_000))
    rng = random.Random(kill_seed)
    after_step = rng.randint(1, ITERATIONS - 2)  # the checkpoint the kill follows
    step_s = reference["manifest"]["wall_time_s"] / ITERATIONS
    delay = rng.uniform(0.0, step_s)  # somewhere in the next step (forward, backward, checkpoint write)
    where = f"(UNIPAN_KILL_SEED={kill_seed}: killed {delay:.2f} s after checkpoint {after_step})"
    ckpt_dir = workdir / "killed" / "checkpoints"
    proc = subprocess.Popen(
        _job(workdir, "killed"),
        cwd=workdir,
        env=_env(workdir),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 240
        while not any(i >= after_step for i, _ in list_checkpoints(ckpt_dir)):
            assert proc.poll() is None, f"the job ended before its checkpoint {after_step} {where}"
            assert time.monotonic() < deadline, f"no checkpoint {after_step} after 240 s {where}"
            time.sleep(0.02)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"the job was not killed {where}"
    assert not (workdir / "killed" / "manifest.json").exists(), f"the job finished before the kill {where}"
    done = max(i for i, _ in list_checkpoints(ckpt_dir))
    # the last steps can be quicker than the mean step (which includes start-up): a kill that lands after
    # the final checkpoint but before the manifest is a valid moment too, and the rerun must then finish it
    assert after_step <= done <= ITERATIONS, where

    rerun = _run_job(workdir, "killed")
    assert rerun["start_iteration"] == done and rerun["resumed_from"], where
    assert rerun["iterations"] == ITERATIONS
    differ = _differing(_weights(workdir, "reference"), _weights(workdir, "killed"))
    assert differ == [], f"killed + rerun differs from the uninterrupted run in {differ[:5]} {where}"


def test_augmentation_does_not_depend_on_the_callers_thread_count(workdir: Path) -> None:
    """Scale jitter resamples differently on 2 threads than on 1 (~1e-7): a sample is computed on one thread,
    as in a DataLoader worker, so ``num_workers: 0`` and ``1`` train on the same images."""
    root = workdir / "data" / "ingested"
    transform = PanopticTransform(
        TransformConfig.from_params(
            {"base_scale": 1.0, "scale_range": [0.8, 1.25], "crop_size": [64, 128], "hflip_prob": 0.5},
            train=True,
        )
    )
    categories = load_ingested(root, "train").categories
    dataset = SeededDataset(PanopticDataset(root, "train", categories, transform))
    items = [item for _, item in zip(range(8), InfiniteShardedSampler(4, 2, seed=SEED), strict=False)]
    threads = torch.get_num_threads()
    try:
        images = {}
        for n in (1, 2):
            torch.set_num_threads(n)
            images[n] = [dataset[item][0] for item in items]
            assert torch.get_num_threads() == n, "the caller's thread count is restored"
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(images[1], images[2], strict=True))
    assert not all(torch.equal(images[1][0], im) for im in images[1][1:]), "the items differ"
