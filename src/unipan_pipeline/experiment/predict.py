"""Prediction glue: a folder of images + a model -> COCO panoptic json + PNGs + overlay pictures.

Model references (:func:`unipan_pipeline.experiment.common.load_model_uri`):
``models:/unipan-cityscapes@champion``, ``models:/unipan-cityscapes/3``, ``runs:/<run id>/model``, a bare run
id, a local model bundle folder (``data/06_models/<name>``) or a training manifest
(``data/06_models/<name>/model.json``).

Output folder (replaced atomically)::

    panoptic_predictions.json   COCO panoptic: images, annotations (segments_info, dataset ids), categories
    panoptic/<stem>.png         id maps (id = R + 256 G + 256^2 B, 0 = void), at each input's size
    overlays/<stem>.png         the image with segments coloured by category and outlined (with overlays)

Unreadable images (truncated, not an image): with ``on_error="skip"`` (the default) each one is logged by
name and skipped, the others are predicted and written, and the summary lists the skipped ones
(``failed``); with ``on_error="fail"`` the readable images are still all predicted and written, then a
:class:`~unipan_pipeline.data.errors.CorruptFileError` listing the skipped files is raised.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from unipan_pipeline.categories import CategoryMap
from unipan_pipeline.data.errors import CorruptFileError, MissingDataError
from unipan_pipeline.data.store import atomic_directory, read_rgb_image
from unipan_pipeline.evaluation import write_id_png
from unipan_pipeline.experiment.common import atomic_write_json, check_keys, load_model_uri, plain

log = logging.getLogger(__name__)

PREDICT_KEYS = {
    "input_dir",
    "model_uri",
    "output_dir",
    "extensions",
    "overlays",
    "device",
    "progress_bar",
    "on_error",
}
DEFAULT_EXTENSIONS = (".png", ".jpg", ".jpeg")
OnError = Literal["skip", "fail"]
ON_ERROR_CHOICES = ("skip", "fail")


def check_on_error(on_error: Any, where: str = "on_error") -> OnError:
    """Validate ``on_error`` (``"skip"`` or ``"fail"``); else a ``ValueError`` naming ``where``."""
    if on_error not in ON_ERROR_CHOICES:
        raise ValueError(f"{where} must be one of {list(ON_ERROR_CHOICES)}, got {on_error!r}")
    return on_error


def overlay(
    image: np.ndarray,
    ids: np.ndarray,
    segments: Sequence[Mapping[str, Any]],
    categories: CategoryMap,
    alpha: float = 0.5,
) -> np.ndarray:
    """The image blended with each segment's category colour (things jittered per instance), outlined."""
    colors = {
        int(c["id"]): np.asarray(c.get("color", (128, 128, 128)), dtype=np.float64)
        for c in categories.to_coco()
    }
    paint = image.astype(np.float64).copy()
    for seg in segments:
        base = colors.get(int(seg["category_id"]), np.array([128.0, 128.0, 128.0]))
        if seg.get("isthing"):
            base = np.clip(base + np.random.default_rng(int(seg["id"])).integers(-60, 61, 3), 0, 255)
        mask = ids == int(seg["id"])
        paint[mask] = (1 - alpha) * paint[mask] + alpha * base
    edge = np.zeros(ids.shape, dtype=bool)
    edge[:-1] |= ids[:-1] != ids[1:]
    edge[:, :-1] |= ids[:, :-1] != ids[:, 1:]
    paint[edge] = 255.0
    return paint.astype(np.uint8)


def list_images(input_dir: str | Path, extensions: Sequence[str] = DEFAULT_EXTENSIONS) -> list[Path]:
    """Images of ``input_dir`` (sorted, non-recursive); clear errors for a missing or empty folder."""
    folder = Path(input_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"prediction input folder {folder} does not exist")
    exts = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions}
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in exts)
    if not files:
        raise FileNotFoundError(
            f"prediction input folder {folder} holds no image with extension {sorted(exts)}"
        )
    return files


def predict_folder(
    input_dir: str | Path,
    model_uri: str,
    output_dir: str | Path,
    *,
    extensions: Sequence[str] = DEFAULT_EXTENSIONS,
    overlays: bool = True,
    device: str = "auto",
    progress_bar: bool = True,
    on_error: OnError = "skip",
) -> dict[str, Any]:
    """Run the model on every image of ``input_dir``; write the output folder (module docstring).

    Args:
        on_error: ``"skip"``: log and skip unreadable images; ``"fail"``: the same, then raise once all the
            readable images are written.

    Returns:
        A summary: model reference, number of images predicted, the skipped images (``failed``: file name
        and error), output paths, seconds.

    Raises:
        CorruptFileError: ``on_error="fail"`` and some images were unreadable (after writing the others), or
            no image at all could be read.
    """
    t0 = time.perf_counter()
    on_error = check_on_error(on_error)
    files = list_images(input_dir, extensions)
    loaded = load_model_uri(model_uri, device=device)
    categories = loaded.categories
    images, annotations = [], []
    failed: list[dict[str, str]] = []
    stems = [f.stem for f in files]
    if len(set(stems)) != len(stems):
        raise ValueError(
            f"{input_dir}: several images share a file stem; rename them (outputs are <stem>.png)"
        )
    with atomic_directory(output_dir) as tmp:
        (tmp / "panoptic").mkdir()
        if overlays:
            (tmp / "overlays").mkdir()
        for path in tqdm(files, desc="predict", disable=not progress_bar):
            try:
                rgb = read_rgb_image(path)
            except (CorruptFileError, MissingDataError) as err:
                log.warning("skipping unreadable image %s: %s", path.name, err)
                failed.append({"file": path.name, "error": str(err)})
                continue
            result = loaded.predictor.predict_images([rgb])[0]
            ids = result["panoptic"]
            segments = [plain(s) for s in result["segments_info"]]
            write_id_png(tmp / "panoptic" / f"{path.stem}.png", ids)
            if overlays:
                Image.fromarray(overlay(rgb, ids, segments, categories)).save(
                    tmp / "overlays" / f"{path.stem}.png"
                )
            images.append(
                {"id": path.stem, "file_name": path.name, "height": rgb.shape[0], "width": rgb.shape[1]}
            )
            annotations.append(
                {
                    "image_id": path.stem,
                    "file_name": f"{path.stem}.png",
                    "segments_info": [{**s, "iscrowd": 0} for s in segments],
                }
            )
        if not images:
            raise CorruptFileError(
                f"prediction input folder {input_dir}: none of its {len(files)} images could be read: "
                + _list_failed(failed)
            )
        atomic_write_json(
            tmp / "panoptic_predictions.json",
            {"images": images, "annotations": annotations, "categories": categories.to_coco()},
        )
    wall = time.perf_counter() - t0
    log.info(
        "predicted %d images of %s with %s into %s (%.1f s)",
        len(images),
        input_dir,
        loaded.source,
        output_dir,
        wall,
    )
    if failed:
        log.warning(
            "%d of the %d images of %s could not be read and were skipped: %s",
            len(failed),
            len(files),
            input_dir,
            ", ".join(f["file"] for f in failed),
        )
    if failed and on_error == "fail":
        raise CorruptFileError(
            f"prediction input folder {input_dir}: {len(failed)} of {len(files)} images could not be read "
            f"(on_error='fail'; the {len(images)} others were predicted into {output_dir}): "
            + _list_failed(failed)
        )
    return {
        "model_uri": str(model_uri),
        "model_source": loaded.source,
        "input_dir": str(input_dir),
        "output_dir": str(output_dir),
        "n_images": len(images),
        "n_failed": len(failed),
        "failed": failed,
        "on_error": on_error,
        "json": str(Path(output_dir) / "panoptic_predictions.json"),
        "wall_time_s": round(wall, 2),
    }


def _list_failed(failed: Sequence[Mapping[str, str]]) -> str:
    return "; ".join(f"{f['file']}: {f['error']}" for f in failed)


def predict_from_params(params: Mapping[str, Any], *, name: str = "predict") -> dict[str, Any]:
    """:func:`predict_folder` from ``params:predict`` (keys: ``input_dir``, ``model_uri``, ``output_dir``,
    ``extensions``, ``overlays``, ``device``, ``progress_bar``, ``on_error``)."""
    params = plain(params)
    check_keys(
        params, f"params:{name}", required={"input_dir", "model_uri", "output_dir"}, optional=PREDICT_KEYS
    )
    on_error = check_on_error(params.get("on_error", "skip"), f"params:{name}.on_error")
    return predict_folder(
        params["input_dir"],
        str(params["model_uri"]),
        params["output_dir"],
        extensions=tuple(params.get("extensions") or DEFAULT_EXTENSIONS),
        overlays=bool(params.get("overlays", True)),
        device=str(params.get("device", "auto")),
        progress_bar=bool(params.get("progress_bar", True)),
        on_error=on_error,
    )
