"""Atomic training checkpoints: what they hold, writing, retention, finding the newest, and resuming.

Layout of ``checkpoint_dir``::

    ckpt_00005000.pt        periodic / final checkpoints (the last ``keep_last_n`` are kept)
    last_finite_00012345.pt written when a non-finite loss stopped the run (never pruned, never auto-resumed)

Every file is written to a temporary file in the same folder, flushed, fsync'ed and moved into place with
``os.replace``: a killed job leaves either the previous or the new checkpoint, never a truncated one.
Checkpoints hold only tensors and plain python values and are read with ``torch.load(weights_only=True)``.

Resume determinism (see :mod:`unipan_pipeline.training.sampler`): a checkpoint taken after ``t`` steps holds
the model, optimiser (momentum buffers), scheduler, GradScaler, the python / numpy / torch / CUDA RNG states
of every rank and the sampler's consumed stream position. Data order and per-sample augmentation are
functions of the stream position only, so a resumed run sees exactly the batches, the augmentations and the
training-time randomness (dropout, RoI sampling) of the uninterrupted run and -- on deterministic kernels
(CPU, or CUDA with ``deterministic: true``) -- ends with bit-identical weights. Everything is restored
through the objects' public ``load_state_dict``; the schedule, a pure function of the configuration and
the iteration, is rebuilt at the checkpoint's iteration (:func:`.schedule.build_scheduler`).
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
from unipan_pipeline.training import distributed as dist_utils
from unipan_pipeline.training.schedule import build_scheduler
from unipan_pipeline.training.seeding import seed_everything
from unipan_pipeline.training.state import TrainState, unwrap

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


# ------------------------------------------------------------------------------------------ training state
_CONFIG_HYPERPARAMETERS = ("weight_decay", "momentum", "betas", "nesterov", "dampening", "eps")


def save_checkpoint(
    state: TrainState, iteration: int, kind: str, extra: dict[str, Any] | None = None
) -> Path | None:
    """Write the checkpoint of ``state`` after ``iteration`` steps; collective (gathers every rank's RNG).

    Args:
        kind: ``"periodic"``, ``"final"`` or ``"last_finite"`` (the latter never pruned nor auto-resumed).
        extra: more entries for the payload (e.g. ``reason``).

    Returns:
        The file written (rank 0), None on other ranks or without ``cfg.checkpoint_dir``.
    """
    folder = state.cfg.checkpoint_path
    if folder is None:
        return None
    rng = dist_utils.all_gather_object(capture_rng_state())
    if not state.info.is_main:
        return None
    payload = {
        "format": CHECKPOINT_FORMAT,
        "kind": kind,
        "iteration": iteration,
        "model": unwrap(state.model).state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "scaler": state.amp.scaler.state_dict() if state.amp.scaler is not None else None,
        "rng": rng,
        "world_size": state.info.world_size,
        "sampler": state.sampler.state_dict(iteration - state.start_iteration),
        "config": state.cfg.to_dict(),
        "torch_version": str(torch.__version__),
        **(extra or {}),
    }
    name = last_finite_name(iteration) if kind == "last_finite" else checkpoint_name(iteration)
    path = atomic_torch_save(payload, folder / name)
    if kind != "last_finite":
        prune_checkpoints(folder, state.cfg.keep_last_n)
    return path


def restore_checkpoint(state: TrainState, path: Path, ckpt: dict[str, Any]) -> int:
    """Load ``ckpt`` (read from ``path``) into ``state``; returns the checkpoint's iteration.

    Model, optimiser, GradScaler: their ``load_state_dict``; the optimiser's hyper-parameters and the schedule
    then follow the current configuration. RNG streams: this rank's saved states when the world size is
    unchanged, else a re-seed with a warning. Sampler: the saved stream position.
    """
    cfg, info = state.cfg, state.info
    try:
        unwrap(state.model).load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: model weights do not fit this model: {exc}") from exc
    fresh = [{k: v for k, v in g.items() if k != "params"} for g in state.optimizer.param_groups]
    try:
        state.optimizer.load_state_dict(ckpt["optimizer"])
    except (ValueError, KeyError) as exc:
        raise CheckpointError(f"{path}: optimiser state does not fit ({exc})") from exc
    for group, fresh_group in zip(state.optimizer.param_groups, fresh, strict=True):
        group.update({k: fresh_group[k] for k in _CONFIG_HYPERPARAMETERS if k in fresh_group})
    iteration = int(ckpt["iteration"])
    saved_schedule = ckpt.get("scheduler") or {}
    if saved_schedule.get("last_epoch", iteration) != iteration:
        raise CheckpointError(
            f"{path}: scheduler at step {saved_schedule['last_epoch']}, checkpoint at iteration {iteration}"
        )
    state.scheduler = build_scheduler(state.optimizer, cfg, steps_taken=iteration)
    if state.amp.scaler is not None and ckpt.get("scaler") is not None:
        state.amp.scaler.load_state_dict(ckpt["scaler"])
    rng = ckpt.get("rng") or []
    if int(ckpt.get("world_size", 1)) == info.world_size and len(rng) == info.world_size:
        restore_rng_state(rng[info.rank])
    else:
        warnings.warn(
            f"{path}: saved with world size {ckpt.get('world_size')} but resuming with {info.world_size}: "
            "RNG streams are re-seeded (data order is still exact, dropout/RoI sampling are not)",
            stacklevel=3,
        )
        seed_everything(cfg.seed + info.rank + iteration)
    sampler_state = ckpt.get("sampler") or {}
    changed = [
        k
        for k in ("seed", "shuffle", "dataset_size")
        if k in sampler_state and sampler_state[k] != getattr(state.sampler, k)
    ]
    if changed:
        warnings.warn(
            f"{path}: sampler {changed} changed since the checkpoint; data order differs from "
            "an uninterrupted run",
            stacklevel=3,
        )
    state.sampler.start_position = int(sampler_state.get("consumed", iteration * cfg.images_per_batch))
    state.start_iteration = iteration
    return iteration


def resume_from_newest(state: TrainState) -> str | None:
    """Restore ``state`` from the newest readable checkpoint in ``cfg.checkpoint_dir`` (rank 0 chooses it,
    every rank loads it); returns its path, or None when there is nothing to resume from."""
    folder = state.cfg.checkpoint_path
    if folder is None:
        return None
    found_path: str | None = None
    if state.info.is_main:
        found = find_resume_checkpoint(folder)
        found_path = str(found[0]) if found else None
    found_path = dist_utils.broadcast_object(found_path)
    if found_path is not None:
        restore_checkpoint(state, Path(found_path), load_checkpoint(found_path, map_location="cpu"))
    return found_path
