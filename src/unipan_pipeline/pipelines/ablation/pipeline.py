"""The ``ablation`` stage: Table 1 of the paper on one ingested data set (``ablation_cityscapes``: the
Cityscapes data, real or generated; ``ablation_coco``: COCO panoptic).

One Kedro namespace per row of Table 1 (``A``, ``B``, ``C1``, ``C2``, ``D1``, ``D2``); four training nodes
and six evaluation nodes, because C1/C2 and D1/D2 share a trained model. Each training node trains its model
once per seed of ``params:ablation_<dataset>.seeds``, each evaluation node evaluates its row on every seed's
weights; the report aggregates over the seeds. The training of a shared model sits
in the namespace of its argmax row (:data:`unipan_pipeline.ablation.TRAINING_ROW`)::

    namespace  nodes                                    reads / writes
    A          A.cityscapes_train_A, A.cityscapes_evaluate_A
    B          B.cityscapes_train_B, B.cityscapes_evaluate_B
    C1         C1.cityscapes_evaluate_C1                 reads ablation_cityscapes_model_C
    C2         C2.cityscapes_train_C, C2.cityscapes_evaluate_C2   writes ablation_cityscapes_model_C
    D1         D1.cityscapes_evaluate_D1                 reads ablation_cityscapes_model_D
    D2         D2.cityscapes_train_D, D2.cityscapes_evaluate_D2   writes ablation_cityscapes_model_D
    D2gt       D2gt.cityscapes_train_Dgt, D2gt.cityscapes_evaluate_D2gt  (supplementary: D2 trained on GT
                                                         detections; the Cityscapes study only)
    (none)     cityscapes_ablation_report                the rows -> table, paper table, claims, metrics,
                                                         table_seeds, table_intervals

Kedro 1.7's ``--namespaces=X`` keeps the nodes whose namespace is ``X`` or starts with ``X.``:

* ``kedro run --pipelines=ablation_cityscapes`` - the whole study (4 models x seeds, 6 rows x seeds, report);
* ``--params=ablation_cityscapes.seeds=1`` - the one-seed quick look (seed 0; ``seeds=[5]`` another seed);
* ``--namespaces=B`` - trains B and evaluates row B;
* ``--namespaces=C2`` - trains C and evaluates row C2;
* ``--namespaces=C1`` - evaluates row C1 only, with the model C an earlier run trained
  (``data/06_models/ablation_cityscapes/C/model.json``; a clear error if it is missing or was trained with
  other settings); ``--namespaces=C1,C2`` trains C once and evaluates both;
* the report is in no namespace: after single rows, rebuild it from the six saved row results with
  ``kedro run --pipelines=ablation_cityscapes --nodes=cityscapes_ablation_report``.

Unlike the other stages, the study is not put in the data set's namespace by the registry: nested under
``cityscapes``, the rows would be ``cityscapes.B`` and ``--namespaces=B`` would no longer find row B. So the
data set is an argument of :func:`create_pipeline` and datasets are named ``ablation_<dataset>_*`` (not
prefixed by the row namespace; the catalog's factories ``ablation_{dataset}_model_{model}``, ...) so that
the Cityscapes and COCO studies never collide; parameters are the study's ``params:ablation_<dataset>``,
resolved per model / row by :mod:`unipan_pipeline.ablation`.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from kedro.pipeline import Node, Pipeline

from unipan_pipeline import ablation
from unipan_pipeline.pipelines.ablation.nodes import build_report, evaluate_row, train_model


def model_dataset(dataset: str, model: str) -> str:
    """Catalog name of a trained model's manifest: ``ablation_<dataset>_model_<model>``."""
    return f"ablation_{dataset}_model_{model}"


def row_dataset(dataset: str, row: str) -> str:
    """Catalog name of a row's result: ``ablation_<dataset>_row_<row>``."""
    return f"ablation_{dataset}_row_{row}"


REPORT_OUTPUTS = ("table", "paper_table", "table_md", "metrics", "claims", "table_seeds", "table_intervals")


def _bind(func: Callable[..., Any], **bound: str) -> Callable[..., Any]:
    """``func`` with the keyword arguments ``bound`` fixed, as a real function: it keeps ``func``'s name,
    docstring and type hints (Kedro's logs name node functions, and Kedro reads the hints to validate
    ``params:`` inputs -- it cannot from a ``functools.partial``), minus the bound arguments."""

    def node_func(*args: Any, **kwargs: Any) -> Any:
        return func(*args, **kwargs, **bound)

    functools.update_wrapper(node_func, func)
    signature = inspect.signature(func)
    node_func.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[p for name, p in signature.parameters.items() if name not in bound]
    )
    node_func.__annotations__ = {k: v for k, v in func.__annotations__.items() if k not in bound}
    return node_func


def create_pipeline(dataset: str, ingested: str, supplementary: tuple[str, ...] = ()) -> Pipeline:
    """The ablation study on ``dataset`` (``cityscapes`` / ``coco``); ``ingested``: its ingestion summary
    (``cityscapes_ingested``); ``supplementary``: rows of :data:`unipan_pipeline.ablation.SUPPLEMENTARY_ROWS`
    to add (their study parameters must declare them)."""
    study = f"params:ablation_{dataset}"
    rows = [*ablation.ROWS, *supplementary]
    models = [*ablation.MODELS, *(ablation.ROW_MODEL[r] for r in supplementary)]
    nodes: list[Node] = []
    for model in models:
        nodes.append(
            Node(
                _bind(train_model, dataset=dataset, model=model),
                inputs=[ingested, study],
                outputs=model_dataset(dataset, model),
                name=f"{dataset}_train_{model}",
                namespace=ablation.training_row(model),
                tags=["ablation", "ablation_train"],
            )
        )
    for row in rows:
        nodes.append(
            Node(
                _bind(evaluate_row, dataset=dataset, row=row),
                inputs=[model_dataset(dataset, ablation.ROW_MODEL[row]), study],
                outputs=row_dataset(dataset, row),
                name=f"{dataset}_evaluate_{row}",
                namespace=row,
                tags=["ablation", "ablation_evaluate"],
            )
        )
    nodes.append(
        Node(
            _bind(build_report, dataset=dataset),
            inputs=[study, *(row_dataset(dataset, row) for row in rows)],
            outputs=[f"ablation_{dataset}_{name}" for name in REPORT_OUTPUTS],
            name=f"{dataset}_ablation_report",
            tags=["ablation", "ablation_report"],
        )
    )
    return Pipeline(nodes)
