"""``mlflow.pyfunc`` wrapper: RGB image in, panoptic id map + segments_info out.

The wrapper rebuilds the network from artifacts written by
:func:`unipan_pipeline.training.tracking.log_model_pyfunc`: it imports the model factory and the config
factory by their import paths (default ``unipan_pipeline.model:build_model`` and
``unipan_pipeline.model:ModelConfig.from_dict``), builds ``CategoryMap.from_dict(categories.json)``, loads the
checkpoint's weights and runs the model in eval mode, which returns per-image dicts with ``panoptic`` (segment
id map, 0 = void) and ``segments_info`` ({id, category_id (dataset id), isthing, score, area}) -- the
prediction format of the COCO panoptic API.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import torch
from PIL import Image

from unipan_pipeline.categories import CategoryMap
from unipan_pipeline.training.factories import resolve_import_path

__all__ = ["PanopticPyfuncModel", "load_image", "resolve_import_path"]


def load_image(image: Any) -> np.ndarray:
    """A path (str/Path) or an ``HxWx3`` uint8 array -> ``HxWx3`` uint8 RGB array; raises on anything else."""
    if isinstance(image, str | Path):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"pyfunc input image {path} does not exist")
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"pyfunc input image must be HxWx3, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise ValueError(f"pyfunc input image must be uint8, got {arr.dtype}")
    return arr


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
    """Pyfunc model; see :func:`unipan_pipeline.training.tracking.log_model_pyfunc`.

    ``predict`` accepts one image (``HxWx3`` uint8 array or path), a list of them, or a pandas DataFrame with
    an ``image`` / ``path`` column of paths. One image -> one dict, several -> a list of dicts, each
    ``{"panoptic": int32 HxW, "segments_info": list[dict]}``.
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

    # No type hints on purpose: MLflow 3 turns predict()'s hints into a schema and rejects a plain `Any`
    # (MLflow then prints a one-off "Add type hints" UserWarning at import; harmless).
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        """See the class docstring."""
        single = isinstance(model_input, str | Path) or (
            isinstance(model_input, np.ndarray) and model_input.ndim == 3
        )
        if single:
            return self.predict_images([model_input])[0]
        if hasattr(model_input, "columns"):  # pandas DataFrame
            column = next((c for c in ("image", "path", "image_path") if c in model_input.columns), None)
            if column is None:
                raise ValueError(
                    f"DataFrame input needs an 'image' or 'path' column, got {list(model_input.columns)}"
                )
            return self.predict_images(list(model_input[column]))
        if isinstance(model_input, np.ndarray) and model_input.ndim == 4:
            return self.predict_images(list(model_input))
        if isinstance(model_input, list | tuple):
            return self.predict_images(list(model_input))
        raise ValueError(f"unsupported pyfunc input of type {type(model_input).__name__}")
