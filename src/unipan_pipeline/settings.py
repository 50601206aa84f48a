"""Kedro project settings (https://docs.kedro.org/en/stable/kedro_project_setup/settings.html)."""

import os

from kedro.config import OmegaConfigLoader

from unipan_pipeline.hooks import RunSummaryHook

# At the end of a pipeline that registered a model: metrics, where the outputs are, the MLflow run.
HOOKS = (RunSummaryHook(),)

# Under torchrun only rank 0 tracks: other ranks would each open an empty MLflow run through kedro-mlflow.
DISABLE_HOOKS_FOR_PLUGINS = ("kedro-mlflow",) if int(os.environ.get("RANK", "0")) > 0 else ()

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
}
