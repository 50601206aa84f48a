"""The panoptic PNG codec (:mod:`unipan_pipeline.fileio.png`): pywuffs, pyspng and the Pillow fallback agree
bit for bit, ids are ``R + 256 G + 256^2 B``, bad files give errors naming the file; the store and the
evaluation use it."""

from __future__ import annotations

import importlib.util
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unipan_pipeline.data import CorruptFileError, read_panoptic_png
from unipan_pipeline.evaluation import pq_compute_files, read_id_png, write_id_png
from unipan_pipeline.fileio import png as panoptic_png
from unipan_pipeline.fileio.errors import PanopticPNGError
from unipan_pipeline.fileio.png import ID_MASK, decode_id_png, decode_pixel_words

HAVE_PYWUFFS = importlib.util.find_spec("pywuffs") is not None
SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "panopticapi_sample"


def _reference_ids(path: Path) -> np.ndarray:
    """``panopticapi.utils.rgb2id`` on Pillow's RGB decoding, in int64 arithmetic."""
    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB")).astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def _png_with_filters(path: Path, rgb: np.ndarray) -> None:
    """Write an 8-bit RGB PNG whose rows cycle through all five PNG filter types (0-4)."""
    h, w, _ = rgb.shape
    data = rgb.astype(np.int64)
    rows = []
    for y in range(h):
        cur = data[y].reshape(-1)
        prev = data[y - 1].reshape(-1) if y else np.zeros_like(cur)
        left = np.concatenate([np.zeros(3, np.int64), cur[:-3]])
        upleft = np.concatenate([np.zeros(3, np.int64), prev[:-3]])
        f = y % 5
        if f == 0:
            pred = np.zeros_like(cur)
        elif f == 1:
            pred = left
        elif f == 2:
            pred = prev
        elif f == 3:
            pred = (left + prev) // 2
        else:
            p = left + prev - upleft
            pa, pb, pc = np.abs(p - left), np.abs(p - prev), np.abs(p - upleft)
            pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, prev, upleft))
        rows.append(bytes([f]) + ((cur - pred) % 256).astype(np.uint8).tobytes())

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"".join(rows))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, np.ndarray]]:
    """Panoptic PNGs of several kinds and odd sizes, with the ids they encode."""
    root = tmp_path_factory.mktemp("pngs")
    rng = np.random.default_rng(3)
    out: dict[str, tuple[Path, np.ndarray]] = {}
    for h, w in ((37, 53), (1, 1), (5, 4), (64, 127)):
        noise = rng.integers(0, 1 << 24, size=(h, w))  # every row filter gets used by the encoder
        write_id_png(root / f"noise_{h}x{w}.png", noise)
        out[f"rgb noise {h}x{w}"] = (root / f"noise_{h}x{w}.png", noise)
        # RGBA with a varying alpha channel that must be ignored
        rgba = np.concatenate(
            [
                noise.astype("<u4").view(np.uint8).reshape(h, w, 4)[..., :3],
                rng.integers(0, 256, size=(h, w, 1)).astype(np.uint8),
            ],
            axis=-1,
        )
        Image.fromarray(rgba, "RGBA").save(root / f"rgba_{h}x{w}.png")
        out[f"rgba noise {h}x{w}"] = (root / f"rgba_{h}x{w}.png", noise)
    blocks = np.repeat(np.repeat(rng.integers(0, 1 << 24, size=(6, 9)), 7, axis=0), 11, axis=1)[:, :97]
    write_id_png(root / "blocks.png", blocks)
    out["rgb blocks 42x97"] = (root / "blocks.png", blocks)
    big = np.zeros((41, 301), dtype=np.int64)
    big[:, 100:] = (1 << 24) - 1  # every byte 255: no overflow
    big[20:, 200:] = 1 << 16
    write_id_png(root / "extremes.png", big)
    out["rgb extremes"] = (root / "extremes.png", big)
    pal = (blocks % 7).astype(np.uint8)
    Image.fromarray(pal, "L").convert("P").save(root / "palette.png")
    out["palette"] = (root / "palette.png", _reference_ids(root / "palette.png"))
    rgb = rng.integers(0, 256, size=(23, 17, 3)).astype(np.uint8)
    rgb[5:15, 3:12] = rgb[5, 3]  # flat patches too
    _png_with_filters(root / "filters.png", rgb)
    with Image.open(root / "filters.png") as im:
        assert (np.asarray(im) == rgb).all()
    out["all five filters"] = (root / "filters.png", _reference_ids(root / "filters.png"))
    for f in sorted(SAMPLE.glob("panoptic_examples/*.png")) if SAMPLE.is_dir() else []:
        out[f"sample {f.name}"] = (f, _reference_ids(f))
    return out


def test_the_decoders_agree_bitwise(generated: dict[str, tuple[Path, np.ndarray]]) -> None:
    # pyspng is a dependency; pywuffs the optional `fastpng` extra, which `make install` installs
    backends = panoptic_png.available_backends()
    assert backends == [*(["pywuffs"] if HAVE_PYWUFFS else []), "pyspng", "pillow"]
    for name, (path, ids) in generated.items():
        decoded = {backend: decode_id_png(path, backend=backend) for backend in backends}
        for got in [*decoded.values(), decode_id_png(path)]:
            assert got.dtype == np.uint32 and got.shape == ids.shape, name
            assert got.flags.c_contiguous and got.flags.writeable, name
            assert np.array_equal(got.astype(np.int64), ids), name
        for backend in backends:  # the words are the ids plus 2^24 alpha
            words = decode_pixel_words(path, backend=backend)
            assert np.array_equal(words & ID_MASK, decoded[backend]), (name, backend)
        if name.startswith("rgb "):  # opaque RGB: every alpha byte 255
            assert (decode_pixel_words(path) >> 24 == 255).all(), name


def test_the_public_readers_use_it(
    generated: dict[str, tuple[Path, np.ndarray]], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real = panoptic_png._decode_pillow

    def spy(data: bytes, path: str | os.PathLike) -> np.ndarray:
        calls.append(Path(path).name)
        return real(data, path)

    monkeypatch.setitem(panoptic_png._MODULES, "pywuffs", None)  # as if neither was installed
    monkeypatch.setitem(panoptic_png._MODULES, "pyspng", None)
    monkeypatch.setitem(panoptic_png._DECODERS, "pillow", spy)
    for name, (path, ids) in generated.items():
        assert np.array_equal(read_id_png(path).astype(np.int64), ids), name
        assert np.array_equal(read_panoptic_png(path).astype(np.int64), ids), name
    assert len(calls) == 2 * len(generated)
    path, ids = generated["rgb blocks 42x97"]
    cats = [{"id": 1, "name": "a", "isthing": 0}]
    segs = [{"id": int(v), "category_id": 1, "iscrowd": 0} for v in np.unique(ids) if v]
    ann = {"image_id": 1, "file_name": path.name, "segments_info": segs}
    (path.parent / "one.json").write_text(json.dumps({"annotations": [ann], "categories": cats}))
    res = pq_compute_files(
        path.parent / "one.json", path.parent / "one.json", path.parent, path.parent, workers=1
    )
    assert res["All"]["pq"] == 1.0 and calls[-2:] == [path.name, path.name]


def test_the_fallbacks(
    generated: dict[str, tuple[Path, np.ndarray]], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, ids = generated["rgba noise 37x53"]
    monkeypatch.setitem(panoptic_png._MODULES, "pywuffs", None)  # as if `import pywuffs` had failed
    assert panoptic_png.available_backends() == ["pyspng", "pillow"]
    assert panoptic_png.default_backend() == "pyspng"
    assert np.array_equal(decode_id_png(path).astype(np.int64), ids)
    with pytest.raises(RuntimeError, match="pywuffs is not installed"):
        decode_id_png(path, backend="pywuffs")
    monkeypatch.setitem(panoptic_png._MODULES, "pyspng", None)
    assert panoptic_png.available_backends() == ["pillow"]
    assert panoptic_png.default_backend() == "pillow"
    assert np.array_equal(decode_id_png(path).astype(np.int64), ids)
    with pytest.raises(RuntimeError, match="pyspng is not installed"):
        decode_id_png(path, backend="pyspng")


def test_auto_imports_only_the_decoder_it_uses(generated: dict[str, tuple[Path, np.ndarray]]) -> None:
    # a PQ worker decodes with the first decoder installed and never imports the others
    path, ids = generated["rgb blocks 42x97"]
    code = (
        "import sys, numpy as np; from unipan_pipeline.fileio.png import decode_id_png, default_backend; "
        f"ids = decode_id_png({str(path)!r}); "
        "print(default_backend(), int(ids.astype(np.int64).sum()), "
        "sorted(m for m in ('pywuffs', 'pyspng') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    name, total, imported = out.split(maxsplit=2)
    assert name == panoptic_png.default_backend() and int(total) == int(ids.astype(np.int64).sum())
    assert imported.strip() == repr([name] if name != "pillow" else [])


@pytest.mark.parametrize("backend", ["pywuffs", "pyspng", "pillow"])
def test_bad_files_are_named(tmp_path: Path, backend: str) -> None:
    if backend == "pywuffs" and not HAVE_PYWUFFS:
        # `make` installs the extra only where a C++ compiler can build it; pyspng and Pillow run regardless
        pytest.skip("pywuffs (the optional fastpng extra) is not installed: no C++ compiler at install")
    good = tmp_path / "good.png"
    write_id_png(good, np.arange(64 * 48).reshape(48, 64) * 4099)
    data = good.read_bytes()
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.png").write_bytes(b"not a png at all, just some text to be long enough")
    flipped = bytearray(data)  # one bit of the compressed pixels: only the IDAT chunk's CRC tells
    idat = data.index(b"IDAT")
    flipped[idat + 4 + (struct.unpack_from(">I", data, idat - 4)[0] // 2)] ^= 0x10
    (tmp_path / "flipped.png").write_bytes(bytes(flipped))
    Image.fromarray(np.zeros((4, 4), np.uint8), "L").save(tmp_path / "grey.png")
    Image.fromarray(np.zeros((4, 4), np.uint16)).save(tmp_path / "grey16.png")
    cases = {
        "truncated.png": r"truncated\.png cannot be decoded \(truncated or corrupt\?\)",
        "text.png": r"text\.png cannot be decoded: not a PNG file",
        "flipped.png": r"flipped\.png cannot be decoded \(truncated or corrupt\?\)",
        "grey.png": r"grey\.png is a 8-bit greyscale PNG; expected an 8-bit RGB/RGBA or palette",
        "grey16.png": r"grey16\.png is a 16-bit greyscale PNG",
        "missing.png": r"missing\.png does not exist",
    }
    for name, pattern in cases.items():
        with pytest.raises(PanopticPNGError, match=pattern):
            decode_id_png(tmp_path / name, backend=backend)  # type: ignore[arg-type]
    with pytest.raises(PanopticPNGError, match=r"CRC mismatch in the IDAT chunk"):
        decode_id_png(tmp_path / "flipped.png", backend=backend)
    with pytest.raises(ValueError, match="unknown PNG backend 'cv2'"):
        decode_id_png(good, backend="cv2")  # type: ignore[arg-type]
    # the store turns them into its own CorruptFileError, still naming the file
    with pytest.raises(CorruptFileError, match=r"panoptic PNG .*truncated\.png cannot be decoded"):
        read_panoptic_png(tmp_path / "truncated.png")
