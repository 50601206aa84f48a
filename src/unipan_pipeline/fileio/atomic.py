"""Atomic writes: a file or a folder appears complete under its final name, or not at all.

Everything is written to a temporary sibling (same folder, so the same file system) and renamed into place
with ``os.replace``, which is atomic on POSIX: a killed process leaves the previous version or the new one,
never a truncated file, and readers never see a half-written one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Literal

__all__ = [
    "atomic_directory",
    "atomic_write",
    "link_or_copy",
    "write_bytes_atomic",
    "write_json_atomic",
    "write_text_atomic",
]

log = logging.getLogger(__name__)


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike, mode: Literal["w", "wb"] = "w", *, fsync: bool = False
) -> Iterator[IO[Any]]:
    """Open a temporary sibling of ``path`` for writing; rename it to ``path`` when the block succeeds.

    On an exception the temporary file is removed and an existing ``path`` is left untouched. The parent
    folder is created. ``fsync``: flush to disk before the rename (checkpoints: survives a power cut too).
    The file gets the usual ``0o644`` permissions (``mkstemp`` would leave ``0o600``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically; returns the path."""
    with atomic_write(path, "w") as f:
        f.write(text)
    return Path(path)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_write(path, "wb") as f:
        f.write(data)
    return Path(path)


def write_json_atomic(
    path: str | os.PathLike, data: Any, *, newline: bool = True, **dump_kwargs: Any
) -> Path:
    """``json.dump(data, **dump_kwargs)`` to ``path`` atomically (plus a final newline unless told not)."""
    with atomic_write(path, "w") as f:
        json.dump(data, f, **dump_kwargs)
        if newline:
            f.write("\n")
    return Path(path)


def link_or_copy(src: str | os.PathLike, dst: str | os.PathLike, *, symbolic: bool = False) -> Path:
    """Make ``dst`` the file ``src``: a hard link (``symbolic``: a symbolic link), else a copy; replaced
    atomically, so an existing ``dst`` is either the old or the new file."""
    src, dst = Path(src), Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.parent / f".{dst.name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        try:
            if symbolic:
                os.symlink(src, tmp)
            else:
                os.link(src, tmp)
        except OSError:
            shutil.copy2(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dst


@contextlib.contextmanager
def atomic_directory(out_root: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of ``out_root``; rename it to ``out_root`` only if the block succeeds.

    On any exception the temporary folder is deleted and an existing ``out_root`` is left untouched. On
    success an existing ``out_root`` is moved aside, the new folder renamed in, then the old one deleted.
    Leftovers of earlier interrupted runs (``.<name>.tmp-*``, ``.<name>.old-*``) are removed first; two
    concurrent writers of the same ``out_root`` are not supported.
    """
    out_root = Path(out_root).absolute()
    out_root.parent.mkdir(parents=True, exist_ok=True)
    stale = list(out_root.parent.glob(f".{out_root.name}.tmp-*"))
    if out_root.exists():  # a run killed between the two renames leaves the old copy aside
        stale += out_root.parent.glob(f".{out_root.name}.old-*")
    for path in stale:
        log.info("removing %s left by an interrupted run", path)
        shutil.rmtree(path, ignore_errors=True)
    tmp = out_root.parent / f".{out_root.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out_root.exists():
        old = out_root.parent / f".{out_root.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(out_root, old)
    os.replace(tmp, out_root)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
