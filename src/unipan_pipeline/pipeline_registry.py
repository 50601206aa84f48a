"""Project pipelines.

Every folder of ``pipelines/`` is registered under its name (``generate_synthetic``, ``ingest_cityscapes``,
``ingest_coco``, ``train_cityscapes``, ``evaluate_cityscapes``, ``train_coco``, ``evaluate_coco``,
``predict``, ``ablation_cityscapes``, ``ablation_coco``, ``robustness_cityscapes`` - Fig. 1's experiment on
one trained model, by default the demo's). The demo reuses the Cityscapes training and evaluation pipelines
in the namespace ``demo``: their parameters are remapped (``params:train_cityscapes`` -> ``params:demo``,
``params:evaluate_cityscapes`` -> ``params:demo.evaluation``) and their datasets prefixed
(``demo.cityscapes_model``, ...):

* ``demo_train``, ``demo_evaluate`` - the demo's training and evaluation (+ registration) steps (DVC stages);
* ``demo`` = ``__default__`` (``kedro run``, ``make demo``): generate_synthetic -> ingest_cityscapes ->
  demo_train -> demo_evaluate, on the generated street scenes.

Discovery is done here rather than with Kedro's ``find_pipelines()``: in Kedro 1.7 ``find_pipelines`` honours
the ``--pipelines`` filter of the command line and raises for a requested name that is not a folder, which the
composed ``demo_*`` pipelines are not (``kedro run --pipelines=demo_train`` would fail).
"""

from __future__ import annotations

import importlib
import importlib.resources

from kedro.pipeline import Pipeline

from unipan_pipeline.pipelines import (
    evaluate_cityscapes,
    generate_synthetic,
    ingest_cityscapes,
    train_cityscapes,
)

DEMO_NAMESPACE = "demo"


def demo_pipelines() -> dict[str, Pipeline]:
    """``demo_train``, ``demo_evaluate`` (Cityscapes pipelines, demo parameters) and ``demo``."""
    train = Pipeline(
        train_cityscapes.create_pipeline(),
        namespace=DEMO_NAMESPACE,
        inputs={"cityscapes_ingested"},
        parameters={"params:train_cityscapes": f"params:{DEMO_NAMESPACE}"},
    )
    evaluate = Pipeline(
        evaluate_cityscapes.create_pipeline(),
        namespace=DEMO_NAMESPACE,
        parameters={"params:evaluate_cityscapes": f"params:{DEMO_NAMESPACE}.evaluation"},
    )
    ingest = ingest_cityscapes.create_pipeline(after_generation=True)
    demo = generate_synthetic.create_pipeline() + ingest + train + evaluate
    return {"demo_train": train, "demo_evaluate": evaluate, "demo": demo}


def folder_pipelines() -> dict[str, Pipeline]:
    """``create_pipeline()`` of every package in ``pipelines/``, by folder name (import errors raise)."""
    package = "unipan_pipeline.pipelines"
    found: dict[str, Pipeline] = {}
    for entry in sorted(importlib.resources.files(package).iterdir(), key=lambda e: e.name):
        if (
            not entry.is_dir()
            or entry.name.startswith((".", "_"))
            or not entry.joinpath("__init__.py").is_file()
        ):
            continue
        module = importlib.import_module(f"{package}.{entry.name}")
        create = getattr(module, "create_pipeline", None)
        if create is None:
            raise ImportError(f"{package}.{entry.name} has no create_pipeline()")
        found[entry.name] = create()
    return found


def register_pipelines() -> dict[str, Pipeline]:
    """Every pipeline of ``pipelines/``, the demo steps and the default pipeline (= ``demo``)."""
    pipelines = folder_pipelines()
    pipelines.update(demo_pipelines())
    pipelines["__default__"] = pipelines["demo"]
    return pipelines
