"""Evaluation reports: per-class tables and pictures (matplotlib Agg), ready for ``mlflow.log_artifact``.

* :func:`write_per_class_table` - CSV + Markdown, columns ``class, isthing, PQ, SQ, RQ, TP, FP, FN, IoU``
  (PQ/SQ/RQ as fractions; ``IoU`` is the summed IoU of the true positives, ``pq_compute``'s ``iou`` stat,
  so ``SQ = IoU / TP``);
* :func:`plot_panoptic_comparison` - prediction and ground truth side by side: image overlay with segment
  outlines and class names;
* :func:`plot_pq_bars` - per-class PQ, things and stuff in two colours;
* :func:`plot_affinity` - Fig. 6 of the paper: image with boxes, ground truth, the instance-affinity heat map
  of one pixel (from ``model.instance_affinity.pixel_affinity``, given as an ``[h, w]`` array) and the
  prediction.

Every function writes into ``out_dir`` (default ``data/08_reporting/``, created), atomically, and returns the
list of written paths.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy import ndimage

from unipan_pipeline.evaluation.panoptic_quality import PQCategories
from unipan_pipeline.fileio.atomic import atomic_write, write_text_atomic

DEFAULT_REPORT_DIR = Path("data/08_reporting")
TABLE_COLUMNS = ["class", "isthing", "PQ", "SQ", "RQ", "TP", "FP", "FN", "IoU"]

__all__ = [
    "DEFAULT_REPORT_DIR",
    "TABLE_COLUMNS",
    "per_class_frame",
    "plot_affinity",
    "plot_panoptic_comparison",
    "plot_pq_bars",
    "write_per_class_table",
]


def _np(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _out(out_dir: str | os.PathLike | None) -> Path:
    folder = Path(out_dir) if out_dir is not None else DEFAULT_REPORT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _atomic_text(path: Path, text: str) -> Path:
    return write_text_atomic(path, text)


def _save_fig(fig: Figure, path: Path, dpi: int = 110) -> Path:
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format=path.suffix.lstrip("."), dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------- tables
def per_class_frame(results: Mapping[str, Any], class_stats: Mapping[int, Mapping[str, Any]]) -> pd.DataFrame:
    """One row per category: ``class, isthing, PQ, SQ, RQ, TP, FP, FN, IoU`` (``class_stats`` from
    ``PQAccumulator.class_stats()``; ``results`` its ``compute()``)."""
    rows = []
    for cid, s in class_stats.items():
        r = results["per_class"][cid]
        rows.append(
            {
                "class": s["name"],
                "isthing": bool(s["isthing"]),
                "PQ": float(r["pq"]),
                "SQ": float(r["sq"]),
                "RQ": float(r["rq"]),
                "TP": int(s["tp"]),
                "FP": int(s["fp"]),
                "FN": int(s["fn"]),
                "IoU": float(s["iou"]),
            }
        )
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def write_per_class_table(
    results: Mapping[str, Any],
    class_stats: Mapping[int, Mapping[str, Any]],
    out_dir: str | os.PathLike | None = None,
    stem: str = "pq_per_class",
) -> list[Path]:
    """Write ``<stem>.csv`` and ``<stem>.md`` (with the All / Things / Stuff summary under the table)."""
    folder = _out(out_dir)
    frame = per_class_frame(results, class_stats)
    csv = _atomic_text(folder / f"{stem}.csv", frame.to_csv(index=False))
    lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    for row in frame.itertuples(index=False):
        lines.append(
            f"| {row[0]} | {'thing' if row[1] else 'stuff'} | {100 * row[2]:.1f} | {100 * row[3]:.1f} | "
            f"{100 * row[4]:.1f} | {row[5]} | {row[6]} | {row[7]} | {row[8]:.2f} |"
        )
    lines += ["", "| group | PQ | SQ | RQ | N |", "|---|---|---|---|---|"]
    for group in ("All", "Things", "Stuff"):
        g = results[group]
        lines.append(
            f"| {group} | {100 * g['pq']:.1f} | {100 * g['sq']:.1f} | {100 * g['rq']:.1f} | {g['n']} |"
        )
    md = _atomic_text(folder / f"{stem}.md", "\n".join(lines) + "\n")
    return [csv, md]


# ---------------------------------------------------------------------------------------------- pictures
def _colorize(
    ids: np.ndarray, segments: Sequence[Mapping[str, Any]], colors: Mapping[int, Sequence[int]]
) -> np.ndarray:
    """Stuff in its category colour, each thing in its category colour jittered by its id; void black."""
    out = np.zeros((*ids.shape, 3), dtype=np.uint8)
    rng = np.random.default_rng(0)
    for seg in segments:
        base = np.asarray(colors.get(int(seg["category_id"]), rng.integers(0, 255, 3)), dtype=np.int64)
        if seg.get("isthing"):
            base = np.clip(base + np.random.default_rng(int(seg["id"])).integers(-50, 51, 3), 0, 255)
        out[ids == seg["id"]] = base.astype(np.uint8)
    return out


def _outline(ids: np.ndarray) -> np.ndarray:
    edge = np.zeros(ids.shape, dtype=bool)
    edge[:-1] |= ids[:-1] != ids[1:]
    edge[:, :-1] |= ids[:, :-1] != ids[:, 1:]
    return edge


def _panel(
    ax: Any,
    image: np.ndarray | None,
    ids: np.ndarray,
    segments: Sequence[Mapping[str, Any]],
    *,
    info: tuple[dict[int, str], dict[int, Sequence[int]], dict[int, bool]],
    title: str,
    alpha: float = 0.55,
) -> None:
    names, colors, isthing = info
    segs = [{**s, "isthing": isthing.get(int(s["category_id"]), False)} for s in segments]
    color = _colorize(ids, segs, colors).astype(np.float64)
    if image is not None:
        base = image.astype(np.float64)
        blend = np.where((ids > 0)[..., None], (1 - alpha) * base + alpha * color, base)
    else:
        blend = color
    blend[_outline(ids)] = 255.0
    ax.imshow(blend.astype(np.uint8))
    min_area = 0.002 * ids.size
    for s in segs:
        mask = ids == s["id"]
        if mask.sum() < min_area:
            continue
        # label at the pixel farthest inside the segment
        dist = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
        y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
        ax.text(
            x,
            y,
            names.get(int(s["category_id"]), str(s["category_id"])),
            fontsize=6,
            ha="center",
            va="center",
            color="white",
            bbox={"facecolor": "black", "alpha": 0.5, "pad": 1, "lw": 0},
        )
    ax.set_title(title)
    ax.axis("off")


def _cat_info(categories: Any) -> tuple[dict[int, str], dict[int, Sequence[int]], dict[int, bool]]:
    if hasattr(categories, "to_coco"):
        categories = categories.to_coco()
    entries = (
        [{**dict(v), "id": k} for k, v in categories.items()]
        if isinstance(categories, Mapping)
        else [dict(c) for c in categories]
    )
    names = {int(c["id"]): str(c.get("name", c["id"])) for c in entries}
    colors = {int(c["id"]): tuple(c.get("color", (128, 128, 128))) for c in entries}
    isthing = {int(c["id"]): c.get("isthing", 0) == 1 or c.get("isthing") is True for c in entries}
    return names, colors, isthing


def plot_panoptic_comparison(
    image: Any,
    pred_ids: Any,
    pred_segments: Sequence[Mapping[str, Any]],
    gt_ids: Any,
    gt_segments: Sequence[Mapping[str, Any]],
    *,
    categories: Any,
    out_dir: str | os.PathLike | None = None,
    name: str = "panoptic_comparison.png",
) -> list[Path]:
    """Prediction (left) and ground truth (right) over the image, segment outlines and class names.

    ``image``: ``uint8 [H, W, 3]`` RGB (or ``None``); ids: ``[H, W]`` maps; segments: ``segments_info`` with
    dataset category ids; ``categories``: CategoryMap / COCO categories list.
    """
    info = _cat_info(categories)
    img = None if image is None else _np(image)
    if img is not None and img.dtype != np.uint8:
        img = np.clip(img, 0, 255).astype(np.uint8)
    pred, gt = _np(pred_ids), _np(gt_ids)
    h, w = pred.shape
    fig, axes = plt.subplots(
        1, 2, figsize=(2 * min(8.0, 8.0 * w / max(h, w)) + 1, min(8.0, 8.0 * h / max(h, w)))
    )
    _panel(axes[0], img, pred, pred_segments, info=info, title="prediction")
    _panel(axes[1], img, gt, gt_segments, info=info, title="ground truth")
    return [_save_fig(fig, _out(out_dir) / name)]


def plot_pq_bars(
    results: Mapping[str, Any],
    categories: Any,
    out_dir: str | os.PathLike | None = None,
    name: str = "pq_per_class.png",
) -> list[Path]:
    """Per-class PQ bar chart (things and stuff coloured differently; summary PQs in the title)."""
    cats = PQCategories.coerce(categories)
    pq = [100 * float(results["per_class"][c]["pq"]) for c in cats.ids]
    colors = ["tab:orange" if t else "tab:blue" for t in cats.isthing]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.35 * len(cats.ids)), 4))
    ax.bar(range(len(pq)), pq, color=colors)
    ax.set_xticks(range(len(pq)))
    ax.set_xticklabels(cats.names, rotation=70, ha="right", fontsize=7)
    ax.set_ylabel("PQ (%)")
    ax.set_ylim(0, 100)
    a, t, s = (results[g] for g in ("All", "Things", "Stuff"))
    ax.set_title(f"PQ {100 * a['pq']:.1f}  (things {100 * t['pq']:.1f}, stuff {100 * s['pq']:.1f})")
    ax.legend(
        handles=[
            plt.Rectangle((0, 0), 1, 1, color="tab:orange"),
            plt.Rectangle((0, 0), 1, 1, color="tab:blue"),
        ],
        labels=["things", "stuff"],
    )
    return [_save_fig(fig, _out(out_dir) / name)]


def plot_affinity(
    image: Any,
    boxes: Any,
    gt_ids: Any,
    gt_segments: Sequence[Mapping[str, Any]],
    affinity: Any,
    *,
    pred_ids: Any,
    pred_segments: Sequence[Mapping[str, Any]],
    pixel: tuple[int, int],
    categories: Any,
    out_dir: str | os.PathLike | None = None,
    name: str = "instance_affinity.png",
) -> list[Path]:
    """Fig. 6: image with detected boxes, ground truth, affinity heat map of ``pixel`` (y, x), prediction.

    Example: ``plot_affinity(img, out["boxes"], gt_ids, gt_segs, pixel_affinity(...),
    pred_ids=out["panoptic"],
    pred_segments=out["segments_info"], pixel=(y, x), categories=category_map)``.

    ``affinity``: ``[h, w]`` array (any stride: it is stretched to the image); ``boxes``: ``[D, 4]`` xyxy.
    """
    info = _cat_info(categories)
    img = _np(image)
    if img.dtype != np.uint8:
        img = np.clip(img, 0, 255).astype(np.uint8)
    heat = _np(affinity).astype(np.float64)
    if heat.ndim != 2:
        raise ValueError(f"affinity must be a [h, w] array, got shape {heat.shape}")
    h, w = img.shape[:2]
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.5 * h / max(w, 1) + 0.8))
    axes[0].imshow(img)
    for b in _np(boxes).reshape(-1, 4):
        axes[0].add_patch(
            plt.Rectangle((b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=False, color="yellow", lw=1)
        )
    axes[0].plot([pixel[1]], [pixel[0]], marker="*", color="red", markersize=12)
    axes[0].set_title("image and detections")
    axes[0].axis("off")
    _panel(axes[1], None, _np(gt_ids), gt_segments, info=info, title="ground truth")
    axes[2].imshow(img, alpha=0.4)
    shown = axes[2].imshow(heat, cmap="jet", alpha=0.6, extent=(0, w, h, 0))
    axes[2].plot([pixel[1]], [pixel[0]], marker="*", color="white", markersize=12)
    axes[2].set_title(f"affinity of pixel {tuple(pixel)}")
    axes[2].axis("off")
    fig.colorbar(shown, ax=axes[2], fraction=0.035)
    _panel(axes[3], None, _np(pred_ids), pred_segments, info=info, title="prediction")
    return [_save_fig(fig, _out(out_dir) / name)]
