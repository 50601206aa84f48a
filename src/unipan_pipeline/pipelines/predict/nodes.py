"""Node of the ``predict`` pipeline (thin wrapper around :mod:`unipan_pipeline.experiment.predict`)."""

from __future__ import annotations

from typing import Any

from unipan_pipeline.experiment import predict_from_params


def predict_images(params: dict[str, Any]) -> dict[str, Any]:
    """Predict every image of ``params["input_dir"]`` with ``params["model_uri"]``; returns a summary.

    Unreadable images are logged and skipped (listed in the summary's ``failed``); with
    ``predict.on_error: fail`` the node raises after writing the predictions of the readable ones.

    Example::

        kedro run --pipelines=predict \\
            --params=predict.input_dir=my_images,predict.model_uri=models:/unipan-cityscapes@champion
    """
    return predict_from_params(params, name="predict")
