"""Write a procedurally generated street-scene data set in the genuine Cityscapes folder layout."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
import time
import zlib
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from cityscapesscripts.helpers.labels import id2label
from tqdm.auto import tqdm

from unipan_pipeline.data.store import portable_path

from .cityscapes_format import (
    colour_image,
    polygons_document,
    rasterize,
    resolve_label,
    write_json,
    write_png,
)
from .config import SceneConfig
from .geometry import to_int_polygon
from .paint import paint_scene
from .scene import compose_scene

log = logging.getLogger(__name__)

MANIFEST_NAME = "synthetic_manifest.json"
FORMAT_VERSION = 1
SMALL_FRACTION = 0.001
"""Instances covering less than this fraction of the image count as small."""

_CITY_NAMES = {
    "train": [
        "alderbrook",
        "bramfeld",
        "corvenau",
        "dellingen",
        "elmsworth",
        "falkenried",
        "grauheim",
        "hollmark",
        "ilsenburg",
        "jarnow",
        "kesselbach",
        "lindhoven",
    ],
    "val": ["marwick", "nordstett", "ostervald", "pellheim"],
    "test": ["quarnstedt", "rosenau", "sandhoven", "tellbruck"],
}


def generator_digest() -> str:
    """SHA-256 of this package's source: a stored tree is only re-used if it was made by the same code."""
    h = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        h.update(path.name.encode("utf-8"))
        h.update(path.read_bytes())
    return h.hexdigest()


def city_of(split: str, index: int, images_per_city: int) -> str:
    """City folder of image ``index`` of ``split`` (independent of the number of images generated)."""
    names = _CITY_NAMES.get(split) or [f"{split.lower()}city"]
    k = index // images_per_city
    base = names[k % len(names)]
    return base if k < len(names) else f"{base}{k // len(names)}"


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of one image: depends on (seed, split, index) only."""
    return np.random.default_rng([int(seed), zlib.crc32(split.encode("utf-8")), int(index)])


@dataclass
class RenderedImage:
    """One generated image with its ground truth and statistics."""

    rgb: np.ndarray
    label_ids: np.ndarray
    instance_ids: np.ndarray
    objects: list[tuple[str, list[tuple[int, int]]]]
    stats: dict[str, Any] = field(default_factory=dict)


def render_image(
    seed: int, split: str, index: int, height: int, width: int, *, cfg: SceneConfig | None = None
) -> RenderedImage:
    """Generate image ``index`` of ``split``: picture, label ids, instance ids, polygons, statistics."""
    cfg = cfg or SceneConfig()
    rng = image_rng(seed, split, index)
    _, scene = compose_scene(rng, width, height, cfg)
    kept = []
    for obj in scene:
        poly = to_int_polygon(obj.polygon, width, height)
        if len(poly) >= 3:
            kept.append((obj, poly))
    objects = [(obj.label, poly) for obj, poly in kept]
    rgb, areas = paint_scene(kept, width, height, rng, cfg)
    label_ids, instance_ids = rasterize(objects, width, height)
    return RenderedImage(
        rgb, label_ids, instance_ids, objects, image_statistics(objects, areas, label_ids, instance_ids)
    )


def image_statistics(
    objects: list[tuple[str, list[tuple[int, int]]]],
    full_areas: list[int],
    label_ids: np.ndarray,
    instance_ids: np.ndarray,
) -> dict[str, Any]:
    """Class pixels, visible instances per class and the hard cases of one image.

    * ``adjacent_pairs``: pairs of same-class thing instances whose visible masks touch (4-neighbourhood).
    * ``occluded``: instances of which at least 2 % of the in-image polygon is hidden by later polygons.
    * ``border``: instances touching the image border.
    * ``small``: instances smaller than 0.1 % of the image.
    """
    h, w = label_ids.shape
    ids, counts = np.unique(label_ids, return_counts=True)
    class_pixels = {id2label[int(i)].name: int(c) for i, c in zip(ids, counts, strict=True)}
    inst_ids, inst_counts = np.unique(instance_ids, return_counts=True)
    visible = dict(zip(inst_ids.tolist(), inst_counts.tolist(), strict=True))
    instances: Counter[str] = Counter()
    crowd: Counter[str] = Counter()
    for i in inst_ids.tolist():
        if i >= 1000:
            instances[id2label[i // 1000].name] += 1
        elif id2label[i].hasInstances:
            crowd[id2label[i].name] += 1
    # adjacency of different same-class instances
    pairs: set[tuple[int, int]] = set()
    for a, b in ((instance_ids[:, :-1], instance_ids[:, 1:]), (instance_ids[:-1, :], instance_ids[1:, :])):
        sel = (a != b) & (a >= 1000) & (b >= 1000) & (a // 1000 == b // 1000)
        if sel.any():
            for p, q in zip(a[sel].tolist(), b[sel].tolist(), strict=True):
                pairs.add((min(p, q), max(p, q)))
    occluded = 0
    counters: Counter[str] = Counter()
    for (name, _), full in zip(objects, full_areas, strict=True):
        lab, group = resolve_label(name)
        if not lab.hasInstances or group or lab.id < 0:
            continue
        ident = lab.id * 1000 + counters[lab.name]
        counters[lab.name] += 1
        seen = visible.get(ident, 0)
        if seen > 0 and full - seen >= max(1, 0.02 * full):
            occluded += 1
    edge = np.concatenate([instance_ids[0], instance_ids[-1], instance_ids[:, 0], instance_ids[:, -1]])
    border = len({int(i) for i in edge.tolist() if i >= 1000})
    small = sum(1 for i, c in visible.items() if i >= 1000 and c < SMALL_FRACTION * h * w)
    return {
        "class_pixels": class_pixels,
        "instances": dict(instances),
        "crowd_regions": dict(crowd),
        "hard_cases": {"adjacent_pairs": len(pairs), "occluded": occluded, "border": border, "small": small},
    }


def _paths(root: Path, split: str, city: str, index: int) -> dict[str, Path]:
    stem = f"{city}_{index:06d}_000019"
    gt = root / "gtFine" / split / city
    return {
        "image": root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png",
        "polygons": gt / f"{stem}_gtFine_polygons.json",
        "labelIds": gt / f"{stem}_gtFine_labelIds.png",
        "instanceIds": gt / f"{stem}_gtFine_instanceIds.png",
        "color": gt / f"{stem}_gtFine_color.png",
    }


def expected_files(root: Path, splits: Mapping[str, int], images_per_city: int) -> list[Path]:
    """Every file a complete tree holds."""
    out: list[Path] = []
    for split, n in splits.items():
        for i in range(n):
            out.extend(_paths(root, split, city_of(split, i, images_per_city), i).values())
    return out


@dataclass(frozen=True)
class _Job:
    root: Path
    split: str
    index: int
    city: str
    seed: int
    height: int
    width: int
    cfg: SceneConfig


def _write_one(job: _Job) -> dict[str, Any]:
    """Render one image, write its five files atomically and return its statistics."""
    img = render_image(job.seed, job.split, job.index, job.height, job.width, cfg=job.cfg)
    paths = _paths(job.root, job.split, job.city, job.index)
    write_png(paths["image"], img.rgb)
    write_json(paths["polygons"], polygons_document(img.objects, job.width, job.height))
    write_png(paths["labelIds"], img.label_ids)
    write_png(paths["instanceIds"], img.instance_ids.astype(np.uint16))
    write_png(paths["color"], colour_image(img.label_ids))
    return img.stats


def _merge(total: dict[str, Any], stats: dict[str, Any]) -> None:
    for key in ("class_pixels", "instances", "crowd_regions", "hard_cases"):
        bucket = total.setdefault(key, {})
        for k, v in stats[key].items():
            bucket[k] = bucket.get(k, 0) + v
    present = total.setdefault("images_with_class", {})
    for k in stats["instances"]:
        present[k] = present.get(k, 0) + 1


def generate_cityscapes_tree(
    root: str | Path,
    splits: Mapping[str, int] | None = None,
    height: int = 256,
    width: int = 512,
    seed: int = 0,
    *,
    scene: SceneConfig | Mapping[str, Any] | None = None,
    images_per_city: int = 20,
    reuse: bool = True,
    progress: bool = True,
    workers: int = 1,
    **knobs: Any,
) -> dict[str, Any]:
    """Generate street scenes and write them as a Cityscapes tree under ``root``.

    Files (exactly Cityscapes' names and encodings)::

        root/leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png         RGB
        root/gtFine/<split>/<city>/<stem>_gtFine_polygons.json         polygons, in drawing order
        root/gtFine/<split>/<city>/<stem>_gtFine_labelIds.png          uint8 label ids
        root/gtFine/<split>/<city>/<stem>_gtFine_instanceIds.png       16-bit: id*1000+k (things), id
        root/gtFine/<split>/<city>/<stem>_gtFine_color.png             RGBA label colours
        root/synthetic_manifest.json                                   the returned manifest

    with ``<stem> = <city>_<seq:06d>_000019``.

    Image ``i`` of a split depends only on ``(seed, split, i)`` and the size/scene parameters, so it is
    byte-identical whatever the number of images generated. Every file is written atomically.

    Re-use policy: if ``root`` holds a *complete* manifest with the same parameters (including a digest
    of the generator's source code) and every file of the tree exists, nothing is generated and the
    stored manifest is returned (``reuse=False`` forces regeneration). Otherwise, if ``root`` holds a
    manifest of ours (complete or interrupted), the split folders of that earlier run are deleted and
    everything is generated again; a non-empty ``root`` without our manifest is refused
    (``FileExistsError``) rather than mixed with foreign files.

    Args:
        root: output folder.
        splits: images per split, default ``{"train": 160, "val": 40}``.
        height, width: image size (pixels).
        seed: global seed.
        scene: :class:`SceneConfig` or a mapping of its fields (difficulty and content knobs).
        images_per_city: images per city folder.
        reuse: allow re-using an identical earlier tree.
        progress: show a tqdm progress bar.
        workers: processes rendering in parallel (the output does not depend on it).
        **knobs: :class:`SceneConfig` fields overriding ``scene`` (e.g. ``noise_level=2.0``,
            ``overlap_prob=0.9``, ``min_object_px=8``); unknown names raise ``ValueError``.

    Returns:
        The manifest: ``root``, ``splits`` (per split: ``images``, ``cities``, class pixel counts,
        visible instances per class, images containing each thing class, crowd regions, hard-case
        counts), ``height``, ``width``, ``seed``, ``cities``, ``params``, ``seconds_per_image`` is
        not stored (it would break byte-identity) but logged.
    """
    splits = dict(splits) if splits is not None else {"train": 160, "val": 40}
    if not splits:
        raise ValueError("splits is empty: give at least one split with a number of images")
    for split, n in splits.items():
        if not isinstance(split, str) or not split or "/" in split or split.startswith("."):
            raise ValueError(f"invalid split name {split!r}")
        if int(n) < 0:
            raise ValueError(f"split {split!r}: number of images must be >= 0, got {n}")
    if height < 32 or width < 32:
        raise ValueError(f"image size {height}x{width} is too small (minimum 32x32)")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if images_per_city < 1:
        raise ValueError(f"images_per_city must be >= 1, got {images_per_city}")
    cfg = scene if isinstance(scene, SceneConfig) else SceneConfig.from_mapping(scene)
    if knobs:
        cfg = SceneConfig.from_mapping({**cfg.to_dict(), **knobs})
    cfg.validate()
    root = Path(root)
    params = {
        "splits": {k: int(v) for k, v in splits.items()},
        "height": int(height),
        "width": int(width),
        "seed": int(seed),
        "images_per_city": int(images_per_city),
        "scene": cfg.to_dict(),
        "format_version": FORMAT_VERSION,
        "generator_sha256": generator_digest(),
    }
    manifest_path = root / MANIFEST_NAME
    old: dict[str, Any] | None = None
    if manifest_path.is_file():
        try:
            old = json.loads(manifest_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(
                f"{manifest_path}: unreadable manifest ({exc}); delete {root} to regenerate"
            ) from exc
    if (
        reuse
        and old is not None
        and old.get("complete")
        and old.get("params") == params
        and all(p.is_file() for p in expected_files(root, splits, images_per_city))
    ):
        log.info(
            "Synthetic Cityscapes tree at %s is up to date (same parameters, all files present): reused", root
        )
        return {**old, "root": portable_path(root)}
    if old is not None:
        for split in set(old.get("params", {}).get("splits", {})) | set(splits):
            for top in ("leftImg8bit", "gtFine"):
                target = root / top / split
                if target.is_dir():
                    shutil.rmtree(target)
    elif root.exists() and any(root.iterdir()):
        raise FileExistsError(
            f"{root} exists, is not empty and holds no {MANIFEST_NAME}: refusing to write into it"
        )

    manifest: dict[str, Any] = {
        "generator": "unipan_pipeline.synthetic",
        "complete": False,
        "root": portable_path(root),  # relative to the project root: hashes alike in every checkout
        "height": int(height),
        "width": int(width),
        "seed": int(seed),
        "params": params,
    }
    write_json(manifest_path, manifest)
    total = sum(splits.values())
    t0 = time.perf_counter()
    split_info: dict[str, Any] = {}
    cities: list[str] = []
    jobs = [
        _Job(root, split, i, city_of(split, i, images_per_city), seed, height, width, cfg)
        for split, n in splits.items()
        for i in range(n)
    ]
    with contextlib.ExitStack() as stack:
        bar = stack.enter_context(
            tqdm(total=total, desc="synthetic street scenes", unit="img", disable=not progress)
        )
        if workers > 1 and total > 1:
            pool = stack.enter_context(ProcessPoolExecutor(max_workers=workers))
            results = pool.map(_write_one, jobs, chunksize=4)
        else:
            results = map(_write_one, jobs)
        aggregates: dict[str, dict[str, Any]] = {split: {} for split in splits}
        for job, stats in zip(jobs, results, strict=True):  # in job order, whatever the worker count
            _merge(aggregates[job.split], stats)
            bar.update(1)
    for split, n in splits.items():
        split_cities = list(dict.fromkeys(job.city for job in jobs if job.split == split))
        split_info[split] = {"images": int(n), "cities": split_cities, **aggregates[split]}
        cities.extend(split_cities)
    elapsed = time.perf_counter() - t0
    manifest.update({"complete": True, "splits": split_info, "cities": cities})
    write_json(manifest_path, manifest)
    per_image = elapsed / max(total, 1)
    log.info(
        "Wrote %d synthetic Cityscapes images (%s) of %dx%d to %s: leftImg8bit/<split>/<city>/ (RGB) and "
        "gtFine/<split>/<city>/ (polygons.json, labelIds, instanceIds, color); manifest %s; "
        "%.1f s (%.3f s/image)",
        total,
        ", ".join(f"{k} {v}" for k, v in splits.items()),
        height,
        width,
        root,
        manifest_path,
        elapsed,
        per_image,
    )
    return manifest
