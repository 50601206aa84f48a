"""Experiment glue between the Kedro nodes and the plain-PyTorch packages (no Kedro in here).

* :func:`train_experiment` - training namespace parameters -> trained model bundle + MLflow run + curves
  (``data``, ``model``, ``training`` packages).
* :func:`evaluate_experiment` - training manifest -> predictions (COCO panoptic), PQ / mIoU / AP,
  per-class table, pictures, ``metrics.json``, logged into the model's MLflow run (``evaluation`` package).
* :func:`register_experiment` - registry ``unipan-<dataset>``, alias ``champion`` moved only on a better PQ.
* :func:`predict_folder` / :func:`predict_from_params` - a folder of images -> COCO panoptic json + PNGs +
  overlays, from a registered model, a run or a local bundle.
* ``python -m unipan_pipeline.experiment predict --model URI --input DIR --output DIR`` - the same on the
  command line.
"""

from __future__ import annotations

from unipan_pipeline.experiment.common import LoadedModel, load_bundle, load_model_uri, provenance
from unipan_pipeline.experiment.evaluate import evaluate_experiment, register_experiment
from unipan_pipeline.experiment.predict import predict_folder, predict_from_params
from unipan_pipeline.experiment.train import PQValidator, train_experiment

__all__ = [
    "LoadedModel",
    "PQValidator",
    "evaluate_experiment",
    "load_bundle",
    "load_model_uri",
    "predict_folder",
    "predict_from_params",
    "provenance",
    "register_experiment",
    "train_experiment",
]
