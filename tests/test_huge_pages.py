"""The package turns on PyTorch's transparent-huge-page allocation before torch loads (``__init__.py``)."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

_PROBE = """
import json, os, sys
import unipan_pipeline  # first, as kedro and the command lines import it
import torch
x = torch.empty(64 << 20, dtype=torch.uint8)
x.fill_(1)  # fault the pages in
huge_kb = 0
with open("/proc/self/smaps_rollup") as f:
    for line in f:
        if line.startswith("AnonHugePages:"):
            huge_kb = int(line.split()[1])
print(json.dumps({"env": os.environ.get("THP_MEM_ALLOC_ENABLE"), "huge_kb": huge_kb}))
"""


@functools.cache
def _probe(env_value: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    if env_value is not None:
        env["THP_MEM_ALLOC_ENABLE"] = env_value
    out = subprocess.run([sys.executable, "-c", _PROBE], env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_package_enables_huge_page_allocation_unless_the_user_set_it() -> None:
    assert _probe(None)["env"] == "1"
    assert _probe("0")["env"] == "0"  # a user's choice is kept


def _thp_mode() -> str | None:
    path = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    if not path.is_file() or not Path("/proc/self/smaps_rollup").is_file():
        return None
    text = path.read_text()
    return text[text.index("[") + 1 : text.index("]")]


@pytest.mark.skipif(_thp_mode() in (None, "never"), reason="this kernel has no transparent huge pages")
def test_large_tensors_get_huge_pages() -> None:
    """With the package imported first, a 64 MB tensor is backed by huge pages; with the variable at 0 it
    is not (unless the kernel gives every process huge pages: THP 'always')."""
    on = _probe(None)["huge_kb"]
    off = _probe("0")["huge_kb"]
    assert on >= 32 << 10, f"only {on} kB of huge pages for a 64 MB tensor"
    if _thp_mode() == "madvise":
        assert off < on
