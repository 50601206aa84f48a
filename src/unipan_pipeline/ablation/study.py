"""The study's parameters: rows, models, seeds, thresholds, folders, what each run gets.

See :mod:`unipan_pipeline.ablation`."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unipan_pipeline.model import ModelConfig

ROWS: tuple[str, ...] = ("A", "B", "C1", "C2", "D1", "D2")
"""Rows of Table 1, in the paper's order."""
MODELS: tuple[str, ...] = ("A", "B", "C", "D")
"""The trained models behind the rows."""
STUDY_KEYS = {"outputs", "base", "evaluation", "models", "rows"}
STUDY_OPTIONAL = {"seeds", "confidence"}
DEFAULT_SEEDS: tuple[int, ...] = (0, 1, 2)
"""Seeds of a study that does not set ``seeds``."""
DEFAULT_CONFIDENCE = 0.95
OUTPUT_KEYS = {"models_dir", "predictions_dir", "report_dir"}
ROW_KEYS = {"inference"}
ROW_THRESHOLDS: dict[str, tuple[str, ...]] = {
    "argmax": ("panoptic_min_score",),
    "heuristic": (
        "heuristic_score_thresh",
        "heuristic_overlap_thresh",
        "heuristic_stuff_area",
        "heuristic_mask_thresh",
    ),
}
"""The thresholds each inference uses, which every row of that inference must state: argmax of Psi / P
keeps the detections scoring >= ``panoptic_min_score``; the heuristic merger keeps those scoring >=
``heuristic_score_thresh``, binarises masks at ``heuristic_mask_thresh``, drops an instance more than
``heuristic_overlap_thresh`` covered and stuff under ``heuristic_stuff_area`` px."""
ROW_INFERENCE_KEYS = {key for keys in ROW_THRESHOLDS.values() for key in keys}
"""ModelConfig fields a row may set besides ``inference``: they act at inference only, so rows sharing a
trained model may differ in them (e.g. the merger's stuff-area limit, scaled to the image size).
(``panoptic_min_score`` also filters the detections of the matching loss in training; that training value
is ``base.model``'s / ``models.<M>``'s, the row's value is the one at evaluation.)"""
SUPPLEMENTARY_ROWS: dict[str, str] = {"D2gt": "Dgt"}
"""Rows beyond Table 1 and their model (each its own training); a study may declare them in ``models`` and
``rows`` (both or neither): ``D2gt`` = D2 trained on ground-truth detections (supplementary Table C)."""
SUPPLEMENTARY_MODELS: tuple[str, ...] = tuple(SUPPLEMENTARY_ROWS.values())
ROW_MODEL: dict[str, str] = {
    "A": "A",
    "B": "B",
    "C1": "C",
    "C2": "C",
    "D1": "D",
    "D2": "D",
    **SUPPLEMENTARY_ROWS,
}
"""The trained model behind each row (fixed by the paper: C1/C2 and D1/D2 share a model)."""
TRAINING_ROW: dict[str, str] = {"A": "A", "B": "B", "C": "C2", "D": "D2", "Dgt": "D2gt"}
"""The row whose Kedro namespace trains each model: its argmax row, the inference of the unified pipeline.
``--namespaces=C2`` therefore trains C and evaluates C2; ``--namespaces=C1`` only evaluates (model C must
have been trained before, by C2's namespace)."""
FLAGS: tuple[str, ...] = ("msk", "aff", "e2e", "heu", "amx")
"""Table 1's settings: object masks, instance affinity, end-to-end matching loss, heuristic merger, argmax."""

# Table 1's columns: (column title, metrics key of unipan_pipeline.evaluation.metrics)
METRIC_COLUMNS: tuple[tuple[str, str], ...] = (
    ("PQ all", "pq"),
    ("PQ th", "pq_th"),
    ("PQ st", "pq_st"),
    ("SQ", "sq"),
    ("RQ", "rq"),
    ("IoU", "miou"),
    ("AP mask", "ap_mask"),
    ("AP box", "ap_box"),
)
TABLE_COLUMNS: tuple[str, ...] = ("Model", *FLAGS, *(title for title, _ in METRIC_COLUMNS))

PAPER_TABLE1: dict[str, dict[str, Any]] = {
    # Table 1 of the paper (Cityscapes val, percent; None = "—": no masks, no mask AP). Settings as described
    # in sec. 4.1. (The text extraction of the table shows a fifth tick in D1's row; the text says D1 uses
    # the heuristic merger, i.e. heu. without amx., which is what is listed here.)
    "A": {"msk": False, "aff": False, "e2e": False, "heu": False, "amx": True,
          "pq": 54.6, "pq_th": 46.0, "pq_st": 60.9, "sq": 77.9, "rq": 68.4, "miou": 75.0,
          "ap_mask": None, "ap_box": 36.9},
    "B": {"msk": False, "aff": True, "e2e": True, "heu": False, "amx": True,
          "pq": 59.0, "pq_th": 50.2, "pq_st": 65.3, "sq": 80.1, "rq": 72.4, "miou": 77.8,
          "ap_mask": None, "ap_box": 38.1},
    "C1": {"msk": True, "aff": False, "e2e": False, "heu": True, "amx": False,
           "pq": 59.3, "pq_th": 51.4, "pq_st": 65.0, "sq": 79.8, "rq": 73.2, "miou": 78.1,
           "ap_mask": 33.8, "ap_box": 38.1},
    "C2": {"msk": True, "aff": False, "e2e": False, "heu": False, "amx": True,
           "pq": 59.6, "pq_th": 52.4, "pq_st": 64.8, "sq": 80.4, "rq": 72.9, "miou": 78.1,
           "ap_mask": 33.8, "ap_box": 38.1},
    "D1": {"msk": True, "aff": True, "e2e": True, "heu": True, "amx": False,
           "pq": 60.6, "pq_th": 52.4, "pq_st": 66.5, "sq": 80.4, "rq": 74.2, "miou": 79.5,
           "ap_mask": 33.7, "ap_box": 38.8},
    "D2": {"msk": True, "aff": True, "e2e": True, "heu": False, "amx": True,
           "pq": 61.4, "pq_th": 54.7, "pq_st": 66.3, "sq": 81.1, "rq": 74.7, "miou": 79.5,
           "ap_mask": 33.7, "ap_box": 38.8},
}  # fmt: skip


@dataclass(frozen=True)
class Claim:
    """One comparison the paper draws from Table 1 (sec. 4.1): ``better`` has a higher PQ than ``worse``."""

    better: str
    worse: str
    what: str

    @property
    def name(self) -> str:
        return f"{self.better} over {self.worse}"

    @property
    def key(self) -> str:
        """``B_over_A`` (MLflow tag / metric and JSON key)."""
        return f"{self.better}_over_{self.worse}"


CLAIMS: tuple[Claim, ...] = (
    Claim("B", "A", "dense instance affinity + matching loss, boxes only (+4.4 PQ)"),
    Claim("C2", "A", "object masks in the dynamic potential (+5.0 PQ)"),
    Claim("D2", "C2", "dense instance affinity + matching loss, with masks (+1.8 PQ)"),
    Claim("D1", "C1", "end-to-end training with the matching loss, same heuristic inference (+1.3 PQ)"),
    Claim("D2", "D1", "unified training and inference: argmax of P instead of the heuristic (+0.8 PQ)"),
)
"""Table 1's claims (sec. 4.1); ``paper_delta`` of each is Table 1's PQ difference."""

SUPPLEMENTARY_CLAIMS: tuple[Claim, ...] = (
    Claim("D2", "D2gt", "predicted rather than ground-truth detections train the panoptic head (Table C)"),
)
"""Claims on the supplementary rows, judged when a study has both rows: sec. 1 says that training with
predicted detections "yields performance gains" (supplementary Table C; its figures are not in the paper's
text, so their ``paper_delta`` is ``None``)."""


def study_claims(rows: Iterable[str]) -> tuple[Claim, ...]:
    """The claims a study of ``rows`` judges: Table 1's, then each supplementary one with both its rows."""
    present = set(rows)
    extra = tuple(c for c in SUPPLEMENTARY_CLAIMS if {c.better, c.worse} <= present)
    return (*CLAIMS, *extra)


# ------------------------------------------------------------------------------------------------ parameters
def _check(mapping: Any, where: str, required: set[str], optional: set[str] = frozenset()) -> None:
    if not isinstance(mapping, Mapping):
        raise ValueError(f"{where} must be a mapping, got {type(mapping).__name__}")
    missing = sorted(required - set(mapping))
    unknown = sorted(set(mapping) - required - set(optional))
    if missing or unknown:
        raise ValueError(
            f"{where}: missing key(s) {missing}, unknown key(s) {unknown}; "
            f"known: {sorted(required | set(optional))}"
        )


def validate_study(study: Mapping[str, Any], where: str = "ablation") -> None:
    """Check a study's parameters (schema in the module docstring); ``ValueError`` naming the key."""
    _check(study, f"params:{where}", STUDY_KEYS, STUDY_OPTIONAL)
    _check(study["outputs"], f"params:{where}.outputs", OUTPUT_KEYS)
    study_seeds(study, where)
    confidence_level(study, where)
    base = study["base"]
    if not isinstance(base, Mapping) or not isinstance(base.get("model"), Mapping):
        raise ValueError(f"params:{where}.base must be a training namespace with a `model` mapping")
    trainer = base.get("trainer") or {}
    if "output_dir" in base or "checkpoint_dir" in trainer:
        raise ValueError(
            f"params:{where}.base: output_dir / trainer.checkpoint_dir are set per model and seed from "
            f"outputs.models_dir; remove them"
        )
    if "seed" in trainer:
        raise ValueError(
            f"params:{where}.base.trainer.seed: each model is trained once per seed of "
            f"params:{where}.seeds; remove it"
        )
    if not isinstance(study["evaluation"], Mapping):
        raise ValueError(f"params:{where}.evaluation must be a mapping (an evaluation namespace)")
    models, rows = study["models"], study["rows"]
    _check(models, f"params:{where}.models", set(MODELS), set(SUPPLEMENTARY_MODELS))
    _check(rows, f"params:{where}.rows", set(ROWS), set(SUPPLEMENTARY_ROWS))
    for row, model in SUPPLEMENTARY_ROWS.items():
        if (row in rows) != (model in models):
            raise ValueError(
                f"params:{where}: declare the supplementary row {row} and its model {model} together"
            )
    for model in study_models(study):
        if not isinstance(models[model], Mapping):
            raise ValueError(f"params:{where}.models.{model} must be a mapping of ModelConfig keys")
        if "inference" in models[model]:
            raise ValueError(
                f"params:{where}.models.{model}: `inference` is a row setting "
                f"(params:{where}.rows.<row>.inference)"
            )
    for row in study_rows(study):
        _check(rows[row], f"params:{where}.rows.{row}", ROW_KEYS, ROW_INFERENCE_KEYS)
        missing = [k for k in ROW_THRESHOLDS.get(str(rows[row]["inference"]), ()) if k not in rows[row]]
        if missing:
            raise ValueError(
                f"params:{where}.rows.{row}: state the thresholds of its inference "
                f"({rows[row]['inference']}) explicitly; missing {missing}"
            )
        row_model_config(study, row, where=where)  # ModelConfig validation (e.g. heuristic without masks)
    evaluation_params(study, ROWS[0], where=where, seed=study_seeds(study, where)[0])


def study_seeds(study: Mapping[str, Any], where: str = "ablation") -> list[int]:
    """The study's seeds: ``seeds`` as a list of distinct non-negative integers, or N for ``0..N-1``
    (:data:`DEFAULT_SEEDS` when not set)."""
    seeds = study.get("seeds", list(DEFAULT_SEEDS))
    if isinstance(seeds, bool):
        seeds = None
    if isinstance(seeds, int):
        seeds = list(range(seeds)) if seeds > 0 else None
    ok = (
        isinstance(seeds, Sequence)
        and not isinstance(seeds, str)
        and len(seeds) > 0
        and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in seeds)
        and len(set(seeds)) == len(seeds)
    )
    if not ok:
        raise ValueError(
            f"params:{where}.seeds must be a non-empty list of distinct non-negative integers or a positive "
            f"count N (seeds 0..N-1), got {study.get('seeds')!r}"
        )
    return [int(x) for x in seeds]  # type: ignore[union-attr]


def confidence_level(study: Mapping[str, Any], where: str = "ablation") -> float:
    """The level of the study's intervals (``confidence``, default 0.95), in (0, 1)."""
    level = study.get("confidence", DEFAULT_CONFIDENCE)
    if isinstance(level, bool) or not isinstance(level, int | float) or not 0.0 < float(level) < 1.0:
        raise ValueError(f"params:{where}.confidence must be a number in (0, 1), got {level!r}")
    return float(level)


def seed_name(seed: int) -> str:
    """``seed<k>``: the folder / run-name part of one seed."""
    return f"seed{int(seed)}"


def study_rows(study: Mapping[str, Any]) -> list[str]:
    """Table 1's rows and the supplementary rows the study declares, in order."""
    return [*ROWS, *(r for r in SUPPLEMENTARY_ROWS if r in (study.get("rows") or {}))]


def study_models(study: Mapping[str, Any]) -> list[str]:
    """The four models and the supplementary models the study declares."""
    return [*MODELS, *(m for m in SUPPLEMENTARY_MODELS if m in (study.get("models") or {}))]


def rows_of_model(model: str) -> list[str]:
    """The rows evaluating the trained model ``model`` (in Table 1's order)."""
    return [row for row in (*ROWS, *SUPPLEMENTARY_ROWS) if ROW_MODEL[row] == model]


def training_row(model: str) -> str:
    """The row whose Kedro namespace holds the training of ``model`` (:data:`TRAINING_ROW`)."""
    return TRAINING_ROW[model]


def model_dir(study: Mapping[str, Any], model: str) -> Path:
    """Folder of a trained model's seeds: ``<outputs.models_dir>/<model>``."""
    return Path(str(study["outputs"]["models_dir"])) / model


def seed_dir(study: Mapping[str, Any], model: str, seed: int) -> Path:
    """Bundle folder of one training: ``<outputs.models_dir>/<model>/seed<k>`` (checkpoints inside)."""
    return model_dir(study, model) / seed_name(seed)


def variant_dir(study: Mapping[str, Any], row: str, seed: int) -> Path:
    """Folder of a row's variant bundle (the seed's weights, the row's inference settings):
    ``<outputs.models_dir>/variants/<row>/seed<k>``."""
    return Path(str(study["outputs"]["models_dir"])) / "variants" / row / seed_name(seed)


def training_params(
    study: Mapping[str, Any], model: str, where: str = "ablation", *, seed: int
) -> dict[str, Any]:
    """The training namespace of one model and seed: ``base`` with the model's switches merged into
    ``base.model``, ``trainer.seed = seed``, ``output_dir = <models_dir>/<model>/seed<k>`` and
    ``trainer.checkpoint_dir = <output_dir>/checkpoints``. The model's inference is the base one (argmax
    unless changed); rows choose theirs at evaluation."""
    if model not in study_models(study):
        raise ValueError(
            f"params:{where}.models: no model {model!r}; the study has {study_models(study)} "
            f"(supplementary models must be declared: {list(SUPPLEMENTARY_MODELS)})"
        )
    params = copy.deepcopy(dict(study["base"]))
    params["model"] = {**dict(params["model"]), **dict(study["models"][model])}
    out = seed_dir(study, model, seed)
    params["output_dir"] = out.as_posix()
    params["trainer"] = {
        **dict(params.get("trainer") or {}),
        "seed": int(seed),
        "checkpoint_dir": (out / "checkpoints").as_posix(),
    }
    try:
        ModelConfig.from_dict(params["model"])
    except (TypeError, ValueError) as err:
        raise ValueError(f"params:{where}.models.{model} (merged into base.model): {err}") from err
    return params


def row_model_config(study: Mapping[str, Any], row: str, where: str = "ablation") -> ModelConfig:
    """The ModelConfig row ``row`` is evaluated with (its model's config, with the row's inference)."""
    if row not in study_rows(study):
        raise ValueError(
            f"params:{where}.rows: no row {row!r}; the study has {study_rows(study)} "
            f"(supplementary rows must be declared: {list(SUPPLEMENTARY_ROWS)})"
        )
    spec = study["rows"][row]
    data = {**dict(study["base"]["model"]), **dict(study["models"][ROW_MODEL[row]]), **dict(spec)}
    try:
        return ModelConfig.from_dict(data)
    except (TypeError, ValueError) as err:
        raise ValueError(f"params:{where}.rows.{row}: {err}") from err


def row_flags(cfg: ModelConfig | Mapping[str, Any]) -> dict[str, bool]:
    """Table 1's settings of a model configuration: msk, aff, e2e, heu, amx."""
    get = cfg.get if isinstance(cfg, Mapping) else lambda k: getattr(cfg, k)
    return {
        "msk": bool(get("use_masks")),
        "aff": bool(get("use_affinity")),
        "e2e": bool(get("train_end_to_end")),
        "heu": get("inference") == "heuristic",
        "amx": get("inference") == "argmax",
    }


def row_thresholds(cfg: ModelConfig) -> dict[str, float | int]:
    """The thresholds the row's inference uses (:data:`ROW_THRESHOLDS`), as evaluated."""
    return {key: getattr(cfg, key) for key in ROW_THRESHOLDS.get(cfg.inference, ())}


def evaluation_params(
    study: Mapping[str, Any], row: str, where: str = "ablation", *, seed: int
) -> dict[str, Any]:
    """The evaluation namespace of one row and seed: ``evaluation`` plus per-row, per-seed paths
    (predictions ``<predictions_dir>/<row>/seed<k>``, reports ``<report_dir>/rows/<row>/seed<k>/``);
    no registration."""
    params = copy.deepcopy(dict(study["evaluation"]))
    for key in ("predictions_dir", "report_dir", "metrics_path", "register"):
        if key in params:
            raise ValueError(f"params:{where}.evaluation.{key} is set per row by the study; remove it")
    report = Path(str(study["outputs"]["report_dir"])) / "rows" / row / seed_name(seed)
    predictions = Path(str(study["outputs"]["predictions_dir"])) / row / seed_name(seed)
    params["predictions_dir"] = predictions.as_posix()
    params["report_dir"] = (report / "evaluation").as_posix()
    params["metrics_path"] = (report / "metrics.json").as_posix()
    return params
