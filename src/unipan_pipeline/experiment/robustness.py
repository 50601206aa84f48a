"""Fig. 1 of the paper as an experiment: how PQ things degrades when the detected boxes are wrong.

The paper's claim (Fig. 1, sec. 1 and 3.4.2): the heuristic merger cannot recover from an inaccurate box
(pixels outside the box are lost), while the dense instance affinity lets a detection claim pixels outside
its box. On ONE trained model with the affinity head, every detected box is shrunk and shifted by a
fraction f of its size at inference (:func:`perturb_boxes`; the mask head then runs on the perturbed boxes,
as it would on a poor detection) and PQ things is measured for

* ``argmax_p``: argmax of P (eq. 3-4), the paper's inference;
* ``argmax_psi``: argmax of Psi (eq. 1-2) on the same weights, i.e. without the affinity term;
* ``heuristic``: the heuristic merger (rows C1/D1) on the same detections.

Parameter schema (``params:robustness_cityscapes``)::

    model_manifest: data/06_models/demo/model.json   # training manifest of a model with the affinity head
    fractions: [0.0, 0.1, 0.2, 0.3]
    seed: 0                           # one generator per fraction, seeded alike
    split: val
    ingested_root: null               # null: the data set the model was trained on
    max_images: null
    device: auto
    heuristic: {heuristic_stuff_area: 64}   # inference-only ModelConfig heuristic_* overrides
    report_dir: data/08_reporting/robustness_cityscapes
    progress_bar: true
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm

from unipan_pipeline.data import PanopticDataset, load_ingested, read_panoptic_png
from unipan_pipeline.evaluation import PQAccumulator
from unipan_pipeline.evaluation.metrics import collect_metrics
from unipan_pipeline.experiment.common import check_keys, load_bundle, plain
from unipan_pipeline.experiment.train import eval_transform, prediction_at_size
from unipan_pipeline.model import PanopticNetwork
from unipan_pipeline.model.box_perturbation import shrink_and_shift

log = logging.getLogger(__name__)

METHODS: tuple[str, ...] = ("argmax_p", "argmax_psi", "heuristic")
"""Inference paths compared (columns ``pq_th_<method>`` of the table)."""
METHOD_TITLES = {"argmax_p": "argmax(P)", "argmax_psi": "argmax(Psi)", "heuristic": "heuristic merger"}
ROBUSTNESS_KEYS = {
    "model_manifest",
    "fractions",
    "seed",
    "split",
    "ingested_root",
    "max_images",
    "device",
    "heuristic",
    "report_dir",
    "progress_bar",
}
HEURISTIC_KEYS = {
    "heuristic_score_thresh",
    "heuristic_overlap_thresh",
    "heuristic_stuff_area",
    "heuristic_mask_thresh",
}


def perturb_boxes(
    boxes: Tensor, fraction: float, image_size: tuple[int, int], generator: torch.Generator
) -> Tensor:
    """Shrink and shift boxes by ``fraction`` of their size (Fig. 1's inaccurate detections; the rule is
    :func:`~unipan_pipeline.model.box_perturbation.shrink_and_shift`, shared with training's box jitter).

    Each side moves inwards by ``fraction / 2`` of the box width / height, then the box moves by
    ``r * (w cos t, h sin t)`` with ``r ~ U(0, fraction)`` and ``t ~ U(0, 2 pi)`` (a random direction, up to
    ``fraction`` of its size), and is clipped to the image. A box inside the image stays inside with a
    positive size (its centre moves by at most ``fraction`` < 1/2 of its size); ``fraction = 0`` returns
    the boxes unchanged.

    Args:
        boxes: [D, 4] xyxy image pixels.
        fraction: in [0, 1).
        image_size: (H, W).
        generator: CPU generator of the random directions and lengths.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"perturb_boxes: fraction={fraction} must be in [0, 1)")
    d = boxes.shape[0]
    r = torch.rand(d, generator=generator, dtype=torch.float64) * fraction
    t = torch.rand(d, generator=generator, dtype=torch.float64) * (2 * math.pi)
    if fraction == 0.0 or d == 0:
        return boxes.clone()
    return shrink_and_shift(boxes, torch.full_like(r, fraction), r, t, image_size)


def pq_under_box_perturbation(
    model: PanopticNetwork,
    samples: Callable[[], Iterable[tuple[Tensor, np.ndarray, list[dict]]]],
    fractions: Sequence[float],
    *,
    seed: int = 0,
    heuristic: Mapping[str, Any] | None = None,
    progress: bool = False,
    total: int | None = None,
) -> list[dict[str, Any]]:
    """PQ / PQ things of argmax(P), argmax(Psi) and the heuristic merger with every box perturbed by each
    fraction (:func:`perturb_boxes`, one generator per fraction seeded with ``seed``).

    Args:
        model: a network with the affinity head and masks (its inference is set to argmax here, its
            ``heuristic_*`` fields updated with ``heuristic``; restored afterwards).
        samples: a callable giving ``(normalised image on the model's device, GT id map, GT segments)``
            per image, afresh for every fraction.
        fractions: perturbations in [0, 1).

    Returns:
        One row per fraction: ``fraction``, ``pq_th_<method>``, ``pq_<method>`` (fractions; None where
        undefined).
    """
    if model.affinity is None or not model.cfg.use_masks:
        raise ValueError(
            "pq_under_box_perturbation: the model needs the affinity head and masks "
            f"(use_affinity {model.affinity is not None}, use_masks {model.cfg.use_masks})"
        )
    categories = model.categories
    saved = (model.cfg, model.training, model.return_potentials, model.return_heuristic)
    model.cfg = model.cfg.replace(inference="argmax", **dict(heuristic or {}))
    model.eval()
    model.return_potentials = model.return_heuristic = True
    outputs = {
        "argmax_p": ("panoptic", "segments_info"),
        "argmax_psi": ("potential_panoptic", "potential_segments_info"),
        "heuristic": ("heuristic_panoptic", "heuristic_segments_info"),
    }
    rows = []
    try:
        for fraction in fractions:
            generator = torch.Generator().manual_seed(seed)
            model.box_perturbation = lambda b, size, f=fraction, g=generator: perturb_boxes(b, f, size, g)
            acc = {m: PQAccumulator(categories) for m in METHODS}
            bar = tqdm(samples(), desc=f"boxes -{fraction:.0%}", total=total, disable=not progress)
            with torch.no_grad():
                for i, (image, gt_ids, gt_segments) in enumerate(bar):
                    out = model([image])[0]
                    for method, (pan_key, seg_key) in outputs.items():
                        pred = {"panoptic": out[pan_key], "segments_info": out[seg_key]}
                        pred_ids, pred_segments = prediction_at_size(pred, gt_ids.shape)
                        acc[method].update(gt_ids, gt_segments, pred_ids, pred_segments, image_id=str(i))
            row: dict[str, Any] = {"fraction": float(fraction)}
            for method in METHODS:
                metrics = collect_metrics(acc[method].compute())
                row[f"pq_th_{method}"] = metrics["pq_th"]
                row[f"pq_{method}"] = metrics["pq"]
            rows.append(row)
            log.info("boxes perturbed by %.0f%%: %s", 100 * fraction, row)
    finally:
        model.box_perturbation = None
        model.cfg, training, model.return_potentials, model.return_heuristic = saved
        model.train(training)
    return rows


def robustness_experiment(params: Mapping[str, Any], *, name: str = "robustness") -> dict[str, Any]:
    """Measure PQ (things) of argmax(P), argmax(Psi) and the heuristic merger under box perturbations.

    Returns:
        ``{table: [{fraction, pq_th_<method>, pq_<method>, ...}], n_images, model_manifest, ...}``.
    """
    where = f"params:{name}"
    params = plain(params)
    check_keys(params, where, required={"model_manifest", "report_dir"}, optional=ROBUSTNESS_KEYS)
    heuristic = dict(params.get("heuristic") or {})
    check_keys(heuristic, f"{where}.heuristic", required=set(), optional=HEURISTIC_KEYS)
    fractions = [float(f) for f in params.get("fractions", [0.0, 0.1, 0.2, 0.3])]
    manifest_path = Path(str(params["model_manifest"]))
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(
            f"{where}.model_manifest: cannot read {manifest_path} ({err}); train it first"
        ) from err
    loaded = load_bundle(manifest["bundle"]["checkpoint"], device=str(params.get("device", "auto")))
    model, categories = loaded.model, loaded.categories
    if model.affinity is None or not model.cfg.use_masks:
        raise ValueError(
            f"{where}: the model of {manifest_path} needs the affinity head and masks "
            f"(use_affinity {model.affinity is not None}, use_masks {model.cfg.use_masks})"
        )
    device = next(model.parameters()).device
    root = str(params.get("ingested_root") or manifest["ingested_root"])
    split = str(params.get("split", manifest.get("val_split", "val")))
    dataset = PanopticDataset(root, split, categories, eval_transform(loaded.eval_transform))
    data = load_ingested(root, split)
    n = len(dataset) if params.get("max_images") is None else min(int(params["max_images"]), len(dataset))
    if n == 0:
        raise ValueError(f"{where}: split {split!r} of {root} has no image")

    def samples() -> Iterator[tuple[Tensor, np.ndarray, list[dict]]]:
        for i in range(n):
            yield dataset[i][0].to(device), read_panoptic_png(data.png_path(i)), data.segments(i)

    rows = pq_under_box_perturbation(
        model,
        samples,
        fractions,
        seed=int(params.get("seed", 0)),
        heuristic=heuristic,
        progress=bool(params.get("progress_bar", True)),
        total=n,
    )
    return plain(
        {
            "table": rows,
            "n_images": n,
            "split": split,
            "ingested_root": root,
            "model_manifest": manifest_path.as_posix(),
            "mlflow_train_run_id": (manifest.get("mlflow") or {}).get("run_id"),
            "seed": int(params.get("seed", 0)),
        }
    )


def robustness_table(result: Mapping[str, Any]) -> pd.DataFrame:
    """The result's rows as a table in percent: ``perturbation %`` and PQ th / PQ of each method."""
    records = []
    for row in result["table"]:
        rec: dict[str, Any] = {"perturbation %": round(100 * float(row["fraction"]), 1)}
        for key in ("pq_th", "pq"):
            for method in METHODS:
                v = row[f"{key}_{method}"]
                title = f"{'PQ th' if key == 'pq_th' else 'PQ'} {METHOD_TITLES[method]}"
                rec[title] = None if v is None else round(100 * float(v), 2)
        records.append(rec)
    table = pd.DataFrame.from_records(records)
    return table.astype({c: "float64" for c in table.columns})


def robustness_markdown(table: pd.DataFrame, result: Mapping[str, Any]) -> str:
    """Markdown report of the table (percent) with the setting."""
    lines = [
        "# Robustness to inaccurate boxes (Fig. 1 of the paper)",
        "",
        f"Model `{result['model_manifest']}`, {result['n_images']} `{result['split']}` images; "
        "every detected box shrunk by the fraction and shifted by up to the fraction of its size "
        f"in a random direction (seed {result['seed']}); masks recomputed on the perturbed boxes. "
        "PQ in percent.",
        "",
        table.to_markdown(index=False, floatfmt=".1f", missingval="—"),
        "",
    ]
    return "\n".join(lines)


def plot_robustness(table: pd.DataFrame, path: str | Path) -> Path:
    """PQ things of the three inference paths against the perturbation (a PNG)."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for method in METHODS:
        ax.plot(
            table["perturbation %"],
            table[f"PQ th {METHOD_TITLES[method]}"],
            marker="o",
            label=METHOD_TITLES[method],
        )
    ax.set_xlabel("box shrink / shift (% of the box size)")
    ax.set_ylabel("PQ things (%)")
    ax.set_title("Inaccurate boxes (Fig. 1)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
