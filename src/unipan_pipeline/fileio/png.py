"""The one codec of panoptic PNGs: ``uint32 [H, W]`` id map <-> RGB PNG, ``id = R + 256 G + 256^2 B``.

Used by the data set and store code, the evaluation pipeline and the PQ command line.

Decoding goes through the fastest decoder installed: **pywuffs** (Wuffs, a memory-safe decoder whose inflate
is several times faster than zlib's on the long runs of panoptic maps), else **pyspng** (libspng), else
Pillow; all give the same ids, bit for bit (tested). Each expands the PNG to 8-bit RGBA in C and the ids
are a zero-copy little-endian ``uint32`` view of each pixel with the alpha byte masked off - no
per-channel arithmetic. The chunk CRCs are checked here, for every decoder (Wuffs skips them, libspng lets a
corrupt IDAT through; a few microseconds: the compressed data of a panoptic PNG are small).

Accepted: 8-bit RGB, 8-bit RGBA (alpha ignored) and palette PNGs (palette colours). Anything else (grey,
16-bit, not a PNG, truncated, corrupt) raises :class:`~unipan_pipeline.fileio.errors.PanopticPNGError`
naming the file and the problem.
"""

from __future__ import annotations

import importlib
import io
import os
import struct
import zlib
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import numpy as np

from unipan_pipeline.fileio.atomic import atomic_write
from unipan_pipeline.fileio.errors import PanopticPNGError

__all__ = [
    "BACKENDS",
    "ID_LIMIT",
    "available_backends",
    "decode_id_png",
    "decode_pixel_words",
    "default_backend",
    "id_to_rgb",
    "rgb_to_id",
    "write_id_png",
]

Backend = Literal["auto", "pywuffs", "pyspng", "pillow"]
BACKENDS = ("pywuffs", "pyspng", "pillow")
"""The decoders, preferred first (``auto`` takes the first one installed)."""
ID_LIMIT = 1 << 24
"""Ids must be below this to fit in an RGB PNG."""
ID_MASK = np.uint32(ID_LIMIT - 1)
"""``words & ID_MASK`` turns :func:`decode_pixel_words` into ids (drops the alpha byte)."""

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOR_NAMES = {0: "greyscale", 2: "RGB", 3: "palette", 4: "greyscale+alpha", 6: "RGBA"}
_LE_U32 = np.dtype("<u4")
_MODULES: dict[str, ModuleType | None] = {}  # cache of the import attempts: name -> module or None
_WUFFS_DECODER: list[Any] = []  # one reusable Wuffs decoder per process


def _module(name: str) -> ModuleType | None:
    """The decoder's module, imported on first use (``None`` when not installed); Pillow is always there."""
    if name not in _MODULES:
        try:
            _MODULES[name] = importlib.import_module("PIL.Image" if name == "pillow" else name)
        except ImportError:
            _MODULES[name] = None
    return _MODULES[name]


def available_backends() -> list[str]:
    """The decoders usable here, preferred first, e.g. ``["pywuffs", "pyspng", "pillow"]``."""
    return [name for name in BACKENDS if name == "pillow" or _module(name) is not None]


def default_backend() -> str:
    """The decoder ``backend="auto"`` uses: the first of :data:`BACKENDS` installed. Imports that one only
    (not every decoder); a parent calls it before starting worker processes so that they inherit it."""
    return next(name for name in BACKENDS if name == "pillow" or _module(name) is not None)


def _check_header(data: bytes, path: str | os.PathLike) -> None:
    """Check the signature and IHDR (the first chunk): 8-bit RGB/RGBA or palette."""
    if len(data) < 33 or data[:8] != _SIGNATURE or data[12:16] != b"IHDR":
        raise PanopticPNGError(f"panoptic PNG {path} cannot be decoded: not a PNG file (bad signature)")
    width, height, depth, color = struct.unpack_from(">IIBB", data, 16)
    if width == 0 or height == 0:
        raise PanopticPNGError(f"panoptic PNG {path} cannot be decoded: header says {width}x{height} pixels")
    if color not in (2, 3, 6) or (color != 3 and depth != 8):
        kind = f"{depth}-bit {_COLOR_NAMES.get(color, f'colour type {color}')}"
        raise PanopticPNGError(
            f"panoptic PNG {path} is a {kind} PNG; expected an 8-bit RGB/RGBA or palette PNG with "
            "id = R + 256 G + 256^2 B"
        )


def _check_crcs(data: bytes, path: str | os.PathLike) -> None:
    """Verify every chunk's CRC up to IEND, so that a flipped bit never decodes into wrong ids."""
    pos, end = 8, len(data)
    view = memoryview(data)
    while pos + 12 <= end:
        (length,) = struct.unpack_from(">I", data, pos)
        stop = pos + 8 + length
        if stop + 4 > end:
            return  # truncated: the decoder reports it
        (crc,) = struct.unpack_from(">I", data, stop)
        if zlib.crc32(view[pos + 4 : stop]) != crc:
            kind = bytes(view[pos + 4 : pos + 8]).decode("latin-1")
            raise _corrupt(path, f"CRC mismatch in the {kind} chunk at byte {pos}")
        if view[pos + 4 : pos + 8] == b"IEND":
            return
        pos = stop + 4


def _words(rgba: np.ndarray) -> np.ndarray:
    """``uint8 [H, W, 4]`` -> ``uint32 [H, W]``: a little-endian view of each pixel, alpha byte included."""
    rgba = np.ascontiguousarray(rgba)
    return rgba.view(_LE_U32).reshape(rgba.shape[:2]).astype(np.uint32, copy=False)


def _corrupt(path: str | os.PathLike, reason: object) -> PanopticPNGError:
    return PanopticPNGError(f"panoptic PNG {path} cannot be decoded (truncated or corrupt?): {reason}")


def _decode_pywuffs(data: bytes, path: str | os.PathLike) -> np.ndarray:
    wuffs = _module("pywuffs")
    if wuffs is None:
        raise RuntimeError("pywuffs is not installed (pip install pywuffs)")
    if not _WUFFS_DECODER:
        config = wuffs.aux.ImageDecoderConfig()
        config.enabled_decoders = [wuffs.ImageDecoderType.PNG]
        config.pixel_format = wuffs.PixelFormat.RGBA_NONPREMUL  # premultiplying would change RGB
        _WUFFS_DECODER.append(wuffs.aux.ImageDecoder(config))
    result = _WUFFS_DECODER[0].decode(data)
    if result.error_message:  # also on partial success (a truncated file): never accepted
        raise _corrupt(path, result.error_message)
    rgba = result.pixbuf
    if rgba.dtype != np.uint8 or rgba.ndim != 3 or rgba.shape[2] != 4:
        raise PanopticPNGError(f"panoptic PNG {path}: unexpected decoded array {rgba.dtype} {rgba.shape}")
    return _words(rgba)


def _decode_pyspng(data: bytes, path: str | os.PathLike) -> np.ndarray:
    spng = _module("pyspng")
    if spng is None:
        raise RuntimeError("pyspng is not installed (pip install pyspng)")
    try:
        rgba = spng.load(data, "RGBA")
    except Exception as exc:  # libspng reports every decoding failure as RuntimeError/ValueError
        raise _corrupt(path, exc) from None
    if rgba.dtype != np.uint8 or rgba.ndim != 3 or rgba.shape[2] != 4:
        raise PanopticPNGError(f"panoptic PNG {path}: unexpected decoded array {rgba.dtype} {rgba.shape}")
    return _words(rgba)


def _decode_pillow(data: bytes, path: str | os.PathLike) -> np.ndarray:
    from PIL import Image  # noqa: PLC0415 - only needed on the fallback path

    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as im:
            rgba = np.asarray(im if im.mode == "RGBA" else im.convert("RGBA"))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise _corrupt(path, exc) from None
    words = _words(rgba)
    return words if words.flags.writeable else words.copy()  # Pillow may hand out a read-only buffer


_DECODERS = {"pywuffs": _decode_pywuffs, "pyspng": _decode_pyspng, "pillow": _decode_pillow}


def _read(path: str | os.PathLike) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise PanopticPNGError(f"panoptic PNG {path} does not exist") from None
    except OSError as exc:
        raise PanopticPNGError(f"panoptic PNG {path} cannot be read: {exc}") from None


def decode_pixel_words(path: str | os.PathLike, *, backend: Backend = "auto") -> np.ndarray:
    """Decode a panoptic PNG into ``uint32 [H, W]`` pixel words: ``id + 2^24 alpha``.

    The ids without their final masking pass, for callers that only compare pixels and mask the few values
    they keep (the PQ file path): equal ids with equal alpha give equal words. ``words & ID_MASK`` gives
    :func:`decode_id_png`'s result. Same arguments and errors as :func:`decode_id_png`.
    """
    if backend != "auto" and backend not in _DECODERS:
        raise ValueError(f"unknown PNG backend {backend!r}; expected 'auto' or one of {list(BACKENDS)}")
    data = _read(path)
    _check_header(data, path)
    _check_crcs(data, path)
    name = default_backend() if backend == "auto" else backend
    return _DECODERS[name](data, path)


def decode_id_png(path: str | os.PathLike, *, backend: Backend = "auto") -> np.ndarray:
    """Decode a COCO panoptic PNG into ``uint32 [H, W]`` ids (identical to ``panopticapi.utils.rgb2id``).

    Args:
        path: the PNG file.
        backend: ``"auto"`` (the first installed of :data:`BACKENDS`), ``"pywuffs"``, ``"pyspng"`` or
            ``"pillow"``.

    Raises:
        PanopticPNGError: missing file, not a PNG, truncated/corrupt, or not 8-bit RGB/RGBA/palette.
    """
    words = decode_pixel_words(path, backend=backend)
    words &= ID_MASK
    return words


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """``[..., 3]`` RGB -> ``uint32`` ids, ``id = R + 256 G + 256^2 B`` (no uint8 overflow)."""
    rgb = np.asarray(rgb).astype(np.uint32, copy=False)
    return rgb[..., 0] + (rgb[..., 1] << 8) + (rgb[..., 2] << 16)


def id_to_rgb(ids: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rgb_to_id`: ``[H, W]`` ids (< 2^24) -> ``uint8 [H, W, 3]``."""
    ids = np.asarray(ids).astype(np.uint32)
    if ids.size and int(ids.max()) >= ID_LIMIT:
        raise ValueError(f"segment id {int(ids.max())} does not fit in an RGB PNG (must be < 2^24)")
    return np.stack([ids & 255, (ids >> 8) & 255, (ids >> 16) & 255], axis=-1).astype(np.uint8)


def write_id_png(path: str | os.PathLike, ids: np.ndarray) -> None:
    """Write an id map as a COCO panoptic RGB PNG, atomically (:func:`~.atomic.atomic_write`)."""
    from PIL import Image  # noqa: PLC0415 - not needed to read PNGs: keeps the PQ command line's start-up light

    image = Image.fromarray(id_to_rgb(ids))
    with atomic_write(Path(path), "wb") as f:
        image.save(f, format="PNG")
