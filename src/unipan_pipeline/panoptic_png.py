"""The one decoder of panoptic PNGs: file -> ``uint32 [H, W]`` id map, ``id = R + 256 G + 256^2 B``.

Used by the PQ command line and evaluation (:mod:`unipan_pipeline.evaluation.panoptic_quality`) and by the
data set / store code (:func:`unipan_pipeline.data.store.read_panoptic_png`).

Decoding goes through **pyspng** (libspng) when it is installed, else through Pillow; both give the same
ids, bit for bit (tested). Either way the PNG is expanded to 8-bit RGBA in C and the ids are a zero-copy
little-endian ``uint32`` view of each pixel with the alpha byte masked off - no per-channel arithmetic.

Accepted: 8-bit RGB, 8-bit RGBA (alpha ignored) and palette PNGs (palette colours). Anything else (grey,
16-bit, not a PNG, truncated) raises :class:`PanopticPNGError` naming the file and the problem.
"""

from __future__ import annotations

import io
import os
import struct
from types import ModuleType
from typing import Literal

import numpy as np

__all__ = [
    "PanopticPNGError",
    "available_backends",
    "decode_id_png",
]

Backend = Literal["auto", "pyspng", "pillow"]

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOR_NAMES = {0: "greyscale", 2: "RGB", 3: "palette", 4: "greyscale+alpha", 6: "RGBA"}
_ID_MASK = np.uint32(0x00FFFFFF)
_LE_U32 = np.dtype("<u4")
_PYSPNG: list[ModuleType | None] = []  # cache of the import attempt: [module or None]


class PanopticPNGError(ValueError):
    """A panoptic PNG cannot be decoded (missing, not a PNG, truncated, or not an RGB id-encoded PNG)."""


def _pyspng() -> ModuleType | None:
    if not _PYSPNG:
        try:
            import pyspng  # noqa: PLC0415 - optional, imported on first use
        except ImportError:
            pyspng = None
        _PYSPNG.append(pyspng)
    return _PYSPNG[0]


def available_backends() -> list[str]:
    """The decoders usable here, preferred first: ``["pyspng", "pillow"]`` or ``["pillow"]``."""
    return (["pyspng"] if _pyspng() is not None else []) + ["pillow"]


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


def _ids_from_rgba(rgba: np.ndarray) -> np.ndarray:
    """``uint8 [H, W, 4]`` -> ``uint32 [H, W]``: a little-endian view of each pixel, alpha masked off."""
    rgba = np.ascontiguousarray(rgba)
    ids = rgba.view(_LE_U32).reshape(rgba.shape[:2]).astype(np.uint32, copy=False)
    if not ids.flags.writeable:  # Pillow's array interface may hand out a read-only buffer
        ids = ids.copy()
    ids &= _ID_MASK
    return ids


def _corrupt(path: str | os.PathLike, exc: BaseException) -> PanopticPNGError:
    return PanopticPNGError(f"panoptic PNG {path} cannot be decoded (truncated or corrupt?): {exc}")


def _decode_pyspng(data: bytes, path: str | os.PathLike) -> np.ndarray:
    spng = _pyspng()
    if spng is None:
        raise RuntimeError("pyspng is not installed (pip install pyspng)")
    try:
        rgba = spng.load(data, "RGBA")
    except Exception as exc:  # libspng reports every decoding failure as RuntimeError/ValueError
        raise _corrupt(path, exc) from None
    if rgba.dtype != np.uint8 or rgba.ndim != 3 or rgba.shape[2] != 4:
        raise PanopticPNGError(f"panoptic PNG {path}: unexpected decoded array {rgba.dtype} {rgba.shape}")
    return _ids_from_rgba(rgba)


def _decode_pillow(data: bytes, path: str | os.PathLike) -> np.ndarray:
    from PIL import Image  # noqa: PLC0415 - only needed on the fallback path

    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as im:
            rgba = np.asarray(im if im.mode == "RGBA" else im.convert("RGBA"))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise _corrupt(path, exc) from None
    return _ids_from_rgba(rgba)


def _read(path: str | os.PathLike) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise PanopticPNGError(f"panoptic PNG {path} does not exist") from None
    except OSError as exc:
        raise PanopticPNGError(f"panoptic PNG {path} cannot be read: {exc}") from None


def decode_id_png(path: str | os.PathLike, *, backend: Backend = "auto") -> np.ndarray:
    """Decode a COCO panoptic PNG into ``uint32 [H, W]`` ids (identical to ``panopticapi.utils.rgb2id``).

    Args:
        path: the PNG file.
        backend: ``"auto"`` (pyspng if installed, else Pillow), ``"pyspng"`` or ``"pillow"``.

    Raises:
        PanopticPNGError: missing file, not a PNG, truncated/corrupt, or not 8-bit RGB/RGBA/palette.
    """
    if backend not in ("auto", "pyspng", "pillow"):
        raise ValueError(f"unknown PNG backend {backend!r}; expected 'auto', 'pyspng' or 'pillow'")
    data = _read(path)
    _check_header(data, path)
    if backend == "pillow" or (backend == "auto" and _pyspng() is None):
        return _decode_pillow(data, path)
    return _decode_pyspng(data, path)
