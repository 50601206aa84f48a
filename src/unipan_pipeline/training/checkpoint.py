"""Atomic training checkpoints, retention and RNG-state capture.

Layout of ``checkpoint_dir``::

    ckpt_00005000.pt        periodic / final checkpoints (the last ``keep_last_n`` are kept)
    last_finite_00012345.pt written when a non-finite loss stopped the run (never pruned, never auto-resumed)

Every file is written to a temporary file in the same folder, flushed, fsync'ed and moved into place with
``os.replace``: a killed job leaves either the previous or the new checkpoint, never a truncated one.
Checkpoints hold only tensors and plain python values and are read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
import random
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unipan_pipeline.fileio.atomic import atomic_write

CHECKPOINT_FORMAT = 1
_CKPT_RE = re.compile(r"^ckpt_(\d{8,})\.pt$")
_LAST_FINITE_RE = re.compile(r"^last_finite_(\d{8,})\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint file is unreadable or does not hold what a training checkpoint must hold."""


def checkpoint_name(iteration: int) -> str:
    """File name of the regular checkpoint taken after ``iteration`` steps."""
    return f"ckpt_{iteration:08d}.pt"


def last_finite_name(iteration: int) -> str:
    """File name of the checkpoint saved when the step after ``iteration`` produced a non-finite loss."""
    return f"last_finite_{iteration:08d}.pt"


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temp file next to ``path``, fsync, then ``os.replace`` (atomic on POSIX)."""
    with atomic_write(path, "wb", fsync=True) as fh:
        torch.save(obj, fh)
    return Path(path)


def list_checkpoints(checkpoint_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """Regular checkpoints in ``checkpoint_dir`` as ``(iteration, path)``, oldest first."""
    folder = Path(checkpoint_dir)
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = _CKPT_RE.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint; raises :class:`CheckpointError` naming the file on any problem."""
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot read checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(ckpt, dict) or "model" not in ckpt or "iteration" not in ckpt:
        raise CheckpointError(f"{path}: not a unipan training checkpoint (missing 'model'/'iteration')")
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path}: checkpoint format {ckpt.get('format')!r}, expected {CHECKPOINT_FORMAT}"
        )
    return ckpt


def find_resume_checkpoint(checkpoint_dir: str | os.PathLike) -> tuple[Path, dict[str, Any]] | None:
    """Newest readable regular checkpoint (unreadable newer files are skipped with a warning)."""
    for _, path in reversed(list_checkpoints(checkpoint_dir)):
        try:
            return path, load_checkpoint(path)
        except CheckpointError as exc:
            warnings.warn(f"skipping unreadable checkpoint: {exc}", stacklevel=2)
    return None


def prune_checkpoints(checkpoint_dir: str | os.PathLike, keep_last_n: int) -> list[Path]:
    """Delete all but the newest ``keep_last_n`` regular checkpoints; returns the deleted paths."""
    ckpts = list_checkpoints(checkpoint_dir)
    doomed = [p for _, p in ckpts[:-keep_last_n]] if keep_last_n > 0 else []
    for p in doomed:
        p.unlink(missing_ok=True)
    return doomed


# ----------------------------------------------------------------------------------------------- RNG states
def capture_rng_state() -> dict[str, Any]:
    """python / numpy / torch CPU / all CUDA devices' RNG states, as weights_only-loadable values."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "kind": np_state[0],
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])
