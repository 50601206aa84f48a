"""Node of the ``train`` stage (a thin wrapper around :mod:`unipan_pipeline.experiment`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from unipan_pipeline.experiment import train_experiment
from unipan_pipeline.experiment.common import plain
from unipan_pipeline.experiment.train import TrainParams
from unipan_pipeline.params import from_params


def train_model(ingest_summary: Any, params: dict[str, Any]) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """Train the panoptic network on an ingested data set; log the run to MLflow.

    Args:
        ingest_summary: output of the ``ingest`` stage (ordering dependency only; the data are read from
            ``params["ingested_root"]``).
        params: a training namespace (``params:train_cityscapes``, ``params:train_coco``, ``params:demo``);
            schema in :mod:`unipan_pipeline.experiment.train`. The last folder of ``output_dir`` names the
            configuration (MLflow run name, error messages).

    Returns:
        The model manifest (bundle paths, MLflow run id, data source, ...), the loss / lr curve and the
        validation-PQ curve.
    """
    name = Path(str(params.get("output_dir", "train"))).name
    return train_experiment(from_params(TrainParams, plain(params), f"params:{name}"), name=name)
