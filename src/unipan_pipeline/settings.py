"""Kedro project settings (https://docs.kedro.org/en/stable/kedro_project_setup/settings.html)."""

import os
import warnings

from kedro.config import OmegaConfigLoader

# kedro-mlflow's KedroPipelineModel (imported with the plugin, unused here: our model is logged by
# unipan_pipeline.training.pyfunc, with a signature) has no type hints on `predict`, and MLflow warns
# about it when the class is defined: a warning no user of this project can act on. Importing the module
# once here, with its warnings recorded and dropped, defines the class before Kedro loads the plugin.
with warnings.catch_warnings(record=True):
    import kedro_mlflow.mlflow.kedro_pipeline_model  # noqa: F401

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
