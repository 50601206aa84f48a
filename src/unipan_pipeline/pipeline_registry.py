"""Project pipelines: the stages of ``pipelines/`` composed per data set and configuration.

Each stage is written once. ``train`` and ``evaluate`` run in several configurations - the paper's
Cityscapes and COCO ones and the demo - so they use generic names (``ingested``, ``params:train`` ->
``model``, ``train_curve``, ...; ``params:evaluate`` -> ``evaluation``, ``registration``) and are put here
in a namespace, ``cityscapes``, ``coco`` or ``demo``, which prefixes their datasets (``cityscapes.model``,
the catalog's factory ``{namespace}.model``) while their parameters are mapped onto the names of
``conf/base/parameters_<pipeline>.yml``. ``ingest``, ``ablation`` and ``robustness`` exist once per data set
and take it as an argument, keeping their node and dataset names (``ingest_cityscapes`` ->
``cityscapes_ingested``, which every namespace on that data set reads; the ablation's rows are namespaces
themselves, ``--namespaces=B``)::

    pipeline               namespace     stage                       parameters
    generate_synthetic     -             generate_synthetic          params:generate_synthetic
    ingest_<ds>            -             ingest(<ds>)                params:ingest_<ds>
    train_<ds>             <ds>          train                       params:train_<ds>
    evaluate_<ds>          <ds>          evaluate (+ registration)   params:evaluate_<ds>
    ablation_<ds>          the rows      ablation(<ds>), Table 1     params:ablation_<ds>
    robustness_cityscapes  -             robustness(cityscapes)      params:robustness_cityscapes
    predict                -             predict                     params:predict
    demo_train             demo          train (cityscapes_ingested) params:demo
    demo_evaluate          demo          evaluate (+ registration)   params:demo.evaluation
    demo = __default__     generate_synthetic -> ingest_cityscapes (waiting for the generator's
                           manifest) -> demo_train -> demo_evaluate

with ``<ds>`` = ``cityscapes`` or ``coco``.

Pipelines are listed here rather than found with Kedro's ``find_pipelines()``: in Kedro 1.7
``find_pipelines`` honours the ``--pipelines`` filter of the command line and raises for a requested name
that is not a folder, which most of these names are not.
"""

from __future__ import annotations

from kedro.pipeline import Pipeline

from unipan_pipeline.pipelines import (
    ablation,
    evaluate,
    generate_synthetic,
    ingest,
    predict,
    robustness,
    train,
)

DATASETS = ("cityscapes", "coco")
DEMO_NAMESPACE = "demo"
DEMO_DATASET = "cityscapes"
SUPPLEMENTARY_ROWS: dict[str, tuple[str, ...]] = {"cityscapes": ("D2gt",)}
"""Rows of :data:`unipan_pipeline.ablation.SUPPLEMENTARY_ROWS` each data set's study adds."""
ROBUSTNESS_DATASETS = ("cityscapes",)


def train_pipeline(namespace: str, params: str, dataset: str) -> Pipeline:
    """``train`` in ``namespace`` on the ingested ``dataset`` with the parameters ``params``."""
    return Pipeline(
        train.create_pipeline(),
        namespace=namespace,
        inputs={"ingested": ingest.ingested(dataset)},
        parameters={"params:train": params},
    )


def evaluate_pipeline(namespace: str, params: str) -> Pipeline:
    """``evaluate`` (+ registration) in ``namespace`` with the parameters ``params``."""
    return Pipeline(evaluate.create_pipeline(), namespace=namespace, parameters={"params:evaluate": params})


def dataset_pipelines(dataset: str) -> dict[str, Pipeline]:
    """``ingest_<dataset>``, ``train_<dataset>``, ``evaluate_<dataset>``, ``ablation_<dataset>`` and, where
    configured, ``robustness_<dataset>``."""
    found = {
        f"ingest_{dataset}": ingest.create_pipeline(dataset),
        f"train_{dataset}": train_pipeline(dataset, f"params:train_{dataset}", dataset),
        f"evaluate_{dataset}": evaluate_pipeline(dataset, f"params:evaluate_{dataset}"),
        f"ablation_{dataset}": ablation.create_pipeline(
            dataset, ingest.ingested(dataset), supplementary=SUPPLEMENTARY_ROWS.get(dataset, ())
        ),
    }
    if dataset in ROBUSTNESS_DATASETS:
        found[f"robustness_{dataset}"] = robustness.create_pipeline(dataset)
    return found


def demo_pipelines() -> dict[str, Pipeline]:
    """``demo_train``, ``demo_evaluate`` (the stages in the namespace ``demo``, demo parameters, on
    ``cityscapes_ingested``) and ``demo`` = generate -> ingest -> train -> evaluate."""
    demo_train = train_pipeline(DEMO_NAMESPACE, f"params:{DEMO_NAMESPACE}", DEMO_DATASET)
    demo_evaluate = evaluate_pipeline(DEMO_NAMESPACE, f"params:{DEMO_NAMESPACE}.evaluation")
    demo = (
        generate_synthetic.create_pipeline()
        + ingest.create_pipeline(DEMO_DATASET, after_generation=True)
        + demo_train
        + demo_evaluate
    )
    return {"demo_train": demo_train, "demo_evaluate": demo_evaluate, "demo": demo}


def register_pipelines() -> dict[str, Pipeline]:
    """Every pipeline by the name users type (``kedro run --pipelines=...``); the default is ``demo``."""
    pipelines: dict[str, Pipeline] = {
        "generate_synthetic": generate_synthetic.create_pipeline(),
        "predict": predict.create_pipeline(),
    }
    for dataset in DATASETS:
        pipelines.update(dataset_pipelines(dataset))
    pipelines.update(demo_pipelines())
    pipelines["__default__"] = pipelines["demo"]
    return pipelines
