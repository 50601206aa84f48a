"""``mlflow.pyfunc`` wrapper: RGB image in, panoptic id map + segments_info out.

The wrapper rebuilds the network from artifacts written by
:func:`unipan_pipeline.tracking.models.log_model_pyfunc`: it imports the model factory and the config
factory by their import paths (default ``unipan_pipeline.model:build_model`` and
``unipan_pipeline.model:ModelConfig.from_dict``), builds ``CategoryMap.from_dict(categories.json)``, loads the
checkpoint's weights and runs the model in eval mode, which returns per-image dicts with ``panoptic`` (segment
id map, 0 = void) and ``segments_info`` ({id, category_id (dataset id), isthing, score, area}) -- the
prediction format of the COCO panoptic API.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import re
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
import torch
from PIL import Image

from unipan_pipeline.categories import CategoryMap
from unipan_pipeline.training.factories import resolve_import_path

__all__ = [
    "IMAGE_COLUMNS",
    "PanopticPyfuncModel",
    "decode_image_bytes",
    "images_from_frame",
    "load_image",
    "resolve_import_path",
]


IMAGE_COLUMNS = ("image", "image_base64", "path", "image_path")
"""Columns of a DataFrame input (one row per image, one of them set): an ``HxWx3`` array of integers in
0..255, the encoded file (PNG/JPEG bytes, or their base64 text), or a path the server can read."""


def decode_image_bytes(data: bytes) -> np.ndarray:
    """Encoded image bytes (PNG, JPEG, ...) or their base64 / ``data:`` URI text -> ``HxWx3`` uint8 RGB."""
    raw = bytes(data)
    try:
        with Image.open(io.BytesIO(raw)) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, ValueError):
        pass
    text = raw.strip()
    if text[:5].lower() == b"data:" and b"," in text:
        text = text.split(b",", 1)[1]
    try:
        decoded = base64.b64decode(text, validate=False)
        with Image.open(io.BytesIO(decoded)) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, ValueError, binascii.Error) as err:
        raise ValueError(
            "pyfunc input bytes are neither an encoded image (PNG/JPEG) nor its base64 encoding"
        ) from err


_BASE64 = re.compile(r"[A-Za-z0-9+/=\s]+")


def _looks_like_base64(text: str) -> bool:
    """A ``data:`` URI, or long base64-alphabet text that is not an existing file."""
    if text.startswith("data:"):
        return True
    return len(text) > 64 and _BASE64.fullmatch(text) is not None and not Path(text).is_file()


def load_image(image: Any) -> np.ndarray:
    """One image -> ``HxWx3`` uint8 RGB array; raises ``ValueError`` / ``FileNotFoundError`` on anything else.

    Accepted: a path (str/Path); encoded file bytes (PNG/JPEG) or their base64 text (str or bytes, also a
    ``data:image/png;base64,...`` URI); an ``HxWx3`` array (or nested lists) of integers in 0..255 -- JSON
    carries them as int64, which is accepted when every value fits in uint8.
    """
    if isinstance(image, bytes | bytearray | np.bytes_):
        return decode_image_bytes(bytes(image))
    if isinstance(image, str) and _looks_like_base64(image):
        return decode_image_bytes(image.encode("ascii", errors="ignore"))
    if isinstance(image, str | Path):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"pyfunc input image {path} does not exist")
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"pyfunc input image must be HxWx3, got shape {arr.shape}")
    if arr.dtype == np.uint8:
        return arr
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"pyfunc input image must hold integers in 0..255 (uint8), got {arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() > 255):
        raise ValueError(
            f"pyfunc input image values must lie in 0..255, got {int(arr.min())}..{int(arr.max())}"
        )
    return arr.astype(np.uint8)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def images_from_frame(frame: pd.DataFrame) -> list[Any]:
    """The image of each row of a DataFrame input: the first set column of :data:`IMAGE_COLUMNS`."""
    columns = [c for c in IMAGE_COLUMNS if c in frame.columns]
    if not columns:
        raise ValueError(
            f"DataFrame input needs one of the columns {list(IMAGE_COLUMNS)}, got {list(frame.columns)}"
        )
    images = []
    for i, (_, row) in enumerate(frame.iterrows()):
        value = next((row[c] for c in columns if not _missing(row[c])), None)
        if value is None:
            raise ValueError(f"DataFrame input row {i} sets none of the columns {columns}")
        images.append(value)
    return images


def build_eval_transform(params: dict[str, Any] | None) -> Any:
    """The evaluation-mode ``PanopticTransform`` of ``unipan_pipeline.data.transforms`` (None -> None)."""
    if params is None:
        return None
    from unipan_pipeline.data.transforms import PanopticTransform, TransformConfig  # noqa: PLC0415 - optional

    return PanopticTransform(TransformConfig.from_params(params, train=False))


def resize_panoptic(
    panoptic: torch.Tensor, segments: list[dict[str, Any]], size: tuple[int, int]
) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """Nearest resize of a segment id map to ``size``; areas recomputed, vanished segments dropped."""
    resized = torch.nn.functional.interpolate(panoptic[None, None].float(), size=size, mode="nearest")
    resized = resized[0, 0].to(torch.int32)
    ids, counts = torch.unique(resized, return_counts=True)
    area = dict(zip(ids.tolist(), counts.tolist(), strict=True))
    kept = [{**s, "area": int(area[s["id"]])} for s in segments if s["id"] in area]
    return resized, kept


def _state_dict_from_checkpoint(obj: Any, path: str) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        return obj["model"]
    if isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    raise ValueError(f"{path}: neither a training checkpoint nor a state_dict")


class PanopticPyfuncModel(mlflow.pyfunc.PythonModel):
    """Pyfunc model; see :func:`unipan_pipeline.tracking.models.log_model_pyfunc`.

    ``predict`` accepts a pandas DataFrame with one row per image and one of the columns
    :data:`IMAGE_COLUMNS` set (the logged signature; what ``mlflow models serve`` passes on), and, called on
    the unwrapped model, also one image in any form of :func:`load_image` or a list of them. One image -> one
    dict, a DataFrame or several -> a list of dicts, each ``{"panoptic": int32 HxW, "segments_info": [...]}``.
    """

    def load_context(self, context: Any) -> None:
        """Rebuild the network from the artifacts (called once by ``mlflow.pyfunc.load_model``)."""
        arts = context.artifacts
        inference = json.loads(Path(arts["inference"]).read_text())
        model_cfg = json.loads(Path(arts["model_config"]).read_text())
        self.categories = CategoryMap.from_dict(json.loads(Path(arts["categories"]).read_text()))
        build = resolve_import_path(inference["model_factory"])
        make_cfg = resolve_import_path(inference["config_factory"])
        self.device = torch.device(inference.get("device", "cpu"))
        if self.device.type == "cuda" and not torch.cuda.is_available():
            self.device = torch.device("cpu")
        model = build(make_cfg(model_cfg), self.categories)
        state = torch.load(arts["checkpoint"], map_location="cpu", weights_only=True)
        model.load_state_dict(_state_dict_from_checkpoint(state, arts["checkpoint"]))
        self.model = model.to(self.device).eval()
        self.mean = torch.tensor(inference["pixel_mean"], dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(inference["pixel_std"], dtype=torch.float32).view(3, 1, 1)
        self.transform = build_eval_transform(inference.get("eval_transform"))

    def _to_tensor(self, rgb: np.ndarray) -> torch.Tensor:
        chw = torch.from_numpy(np.array(rgb, dtype=np.uint8, copy=True)).permute(2, 0, 1).contiguous()
        if self.transform is not None:
            image, _ = self.transform(chw, torch.zeros(chw.shape[1:], dtype=torch.int64))
            return image.to(self.device)
        return ((chw.float() / 255.0 - self.mean) / self.std).to(self.device)

    def predict_images(self, images: list[Any]) -> list[dict[str, Any]]:
        """Run the model on a list of images (paths or arrays); outputs are at each input's size."""
        arrays = [load_image(im) for im in images]
        tensors = [self._to_tensor(a) for a in arrays]
        with torch.no_grad():
            outputs = self.model(tensors)
        results = []
        for arr, out in zip(arrays, outputs, strict=True):
            panoptic = out["panoptic"].detach().cpu().to(torch.int32)
            segments = []
            for s in out["segments_info"]:
                seg = {k: (v.item() if isinstance(v, torch.Tensor) else v) for k, v in s.items()}
                seg["id"], seg["category_id"] = int(seg["id"]), int(seg["category_id"])
                segments.append(seg)
            if tuple(panoptic.shape) != arr.shape[:2]:
                panoptic, segments = resize_panoptic(panoptic, segments, arr.shape[:2])
            results.append({"panoptic": panoptic.numpy().astype(np.int32), "segments_info": segments})
        return results

    # `model_input: pd.DataFrame` is what MLflow hands over after enforcing the logged signature (a table of
    # IMAGE_COLUMNS); MLflow derives no schema from a DataFrame hint, so the logged signature stays the one
    # that applies. The unwrapped model (`unwrap_python_model()`) also takes the plain forms below.
    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> dict[str, Any] | list[dict[str, Any]]:
        """See the class docstring."""
        single = isinstance(model_input, str | Path | bytes) or (
            isinstance(model_input, np.ndarray) and model_input.ndim == 3
        )
        if single:
            return self.predict_images([model_input])[0]
        if isinstance(model_input, pd.DataFrame):
            return self.predict_images(images_from_frame(model_input))
        if isinstance(model_input, np.ndarray) and model_input.ndim == 4:
            return self.predict_images(list(model_input))
        if isinstance(model_input, np.ndarray) and model_input.ndim == 1:  # strings / bytes
            return self.predict_images(list(model_input))
        if isinstance(model_input, list | tuple):
            return self.predict_images(list(model_input))
        raise ValueError(f"unsupported pyfunc input of type {type(model_input).__name__}")
