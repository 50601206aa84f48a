"""Project pipelines."""

from __future__ import annotations

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline


def register_pipelines() -> dict[str, Pipeline]:
    """Register every pipeline under ``pipelines/`` and compose the default one.

    The default pipeline (``kedro run``, ``make demo``) works on the generated street-scene data set.
    """
    pipelines = find_pipelines(raise_errors=True)
    default_parts = [name for name in ("generate_synthetic", "ingest_cityscapes") if name in pipelines]
    pipelines["__default__"] = sum((pipelines[name] for name in default_parts), Pipeline([]))
    return pipelines
