"""Multi-process training with torch.distributed (DistributedDataParallel).

One process is the default. With ``num_processes: N`` (N > 1) :func:`unipan_pipeline.training.train` starts
N workers on this machine through torch's own elastic launcher -- the machinery behind ``torchrun``
(:func:`torch.distributed.launcher.api.elastic_launch` with a standalone c10d rendezvous) -- and each worker
runs the same loop under DDP: gloo on CPU, NCCL on CUDA (one GPU per local rank).

When the environment already defines ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (the process was started by
``torchrun`` or another launcher), nothing is re-launched: the current process joins the process group as the
given rank. That is how several machines are used -- run on every node::

    torchrun --nnodes=2 --nproc_per_node=4 --node_rank=<0|1> \\
             --rdzv_backend=c10d --rdzv_endpoint=<host of node 0>:29500 --rdzv_id=unipan-coco \\
             -m unipan_pipeline run --pipelines=train_coco      # or any script calling train(...)

(or ``--nnodes=2 --nproc_per_node=4 --rdzv_endpoint=...`` without ``--node_rank`` for an elastic rendezvous).
The global batch ``images_per_batch`` is split evenly over ``WORLD_SIZE`` processes. Only rank 0 logs,
checkpoints and registers models; all ranks resume from the same checkpoint folder, which must therefore be
on a file system shared by the nodes.
"""

from __future__ import annotations

import os
import signal
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch.distributed.launcher.api import LaunchConfig, elastic_launch


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in the process group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """True on rank 0 (the process that logs, checkpoints and registers)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when more than one process trains."""
        return self.world_size > 1


def env_dist_info() -> DistInfo | None:
    """Rank information set by torchrun / elastic agents, or None when not launched that way."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        rank = int(os.environ["RANK"])
        return DistInfo(rank, int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", rank)))
    return None


def current_dist_info() -> DistInfo:
    """The initialised process group's rank/size, else the launcher's environment, else a single process."""
    if dist.is_available() and dist.is_initialized():
        local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
        return DistInfo(dist.get_rank(), dist.get_world_size(), local)
    return env_dist_info() or DistInfo()


def is_main_process() -> bool:
    """True unless this is a non-zero rank of a distributed job."""
    return current_dist_info().is_main


def resolve_backend(backend: str, device: torch.device) -> str:
    """``auto`` -> NCCL for CUDA devices, gloo otherwise."""
    if backend == "auto":
        return "nccl" if device.type == "cuda" else "gloo"
    return backend


def init_process_group(backend: str, device: torch.device, timeout_s: float = 1800.0) -> DistInfo:
    """Join the process group described by the environment (``env://``) if not already joined."""
    info = env_dist_info()
    if info is None:
        raise RuntimeError("init_process_group needs RANK/WORLD_SIZE in the environment (torchrun)")
    if device.type == "cuda":
        torch.cuda.set_device(info.local_rank)
    if not dist.is_initialized():
        kwargs: dict[str, Any] = {}
        if device.type == "cuda":
            kwargs["device_id"] = torch.device("cuda", info.local_rank)
        dist.init_process_group(
            backend=resolve_backend(backend, device),
            init_method="env://",
            timeout=timedelta(seconds=timeout_s),
            **kwargs,
        )
    return current_dist_info()


def destroy_process_group() -> None:
    """Leave the process group if one was joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """``dist.barrier()`` when distributed, no-op otherwise."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


T = TypeVar("T")

_LAUNCHER_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)


def launch_local(
    entrypoint: Callable[..., Any],
    args: tuple[Any, ...],
    nproc: int,
    *,
    run_id: str | None = None,
    max_restarts: int = 0,
) -> dict[int, Any]:
    """Run ``entrypoint(*args)`` in ``nproc`` local processes via torch's elastic launcher (``torchrun``).

    Uses a standalone c10d rendezvous on a free localhost port (what ``torchrun --standalone`` does).
    ``entrypoint`` and ``args`` must be picklable (processes are spawned). Returns ``{rank: return value}``;
    a failure in any worker raises :class:`torch.distributed.elastic.multiprocessing.errors.ChildFailedError`
    carrying the worker's traceback.
    """
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=run_id or f"unipan-{uuid.uuid4().hex[:8]}",
        rdzv_backend="c10d",
        rdzv_endpoint=f"127.0.0.1:{_free_port()}",
        rdzv_configs={"is_host": True},
        max_restarts=max_restarts,
        monitor_interval=0.1,
        start_method="spawn",
    )
    # The elastic launcher installs SIGTERM/SIGINT/SIGHUP/SIGQUIT handlers in this process and leaves them
    # there; a later fork (e.g. a multiprocessing pool in evaluation) would inherit them and hang on
    # termination. Put back the handlers we had.
    saved = {sig: signal.getsignal(sig) for sig in _LAUNCHER_SIGNALS}
    try:
        return elastic_launch(config, entrypoint)(*args)
    finally:
        for sig, handler in saved.items():
            if handler is not None:
                signal.signal(sig, handler)


def all_gather_object(obj: Any) -> list[Any]:
    """``dist.all_gather_object`` when distributed, ``[obj]`` otherwise."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``dist.broadcast_object_list`` of one object when distributed, identity otherwise."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


@dataclass(frozen=True)
class _MainFailed:
    """What rank 0 broadcasts instead of its result when computing it raised."""

    error: str


def result_of_main(on_main: Callable[[], T], on_others: Callable[[], object]) -> T:
    """Rank 0 runs ``on_main``, every other rank ``on_others`` (both may take part in collectives, e.g.
    train together); then every rank returns rank 0's value, sent through ``torch.distributed``.

    When ``on_main`` raises, the other ranks raise ``RuntimeError`` naming rank 0's error instead of waiting.
    Not distributed: ``on_main()``.
    """
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return on_main()
    if dist.get_rank() == 0:
        try:
            value = on_main()
        except BaseException as exc:
            broadcast_object(_MainFailed(f"{type(exc).__name__}: {exc}"))
            raise
        broadcast_object(value)
        return value
    on_others()
    value = broadcast_object(None)
    if isinstance(value, _MainFailed):
        raise RuntimeError(f"rank 0 failed, so rank {dist.get_rank()} has no result: {value.error}")
    return value
