"""The ablation study of the paper (sec. 4.1, Table 1) as plain data and functions (no Kedro, no MLflow).

Rows of Table 1 and the four trained models behind them::

    row  model  msk. aff. e2e. heu. amx.   inference
    A    A       -    -    -    -    x     argmax of Psi (eq. 1-2), Faster R-CNN boxes only
    B    B       -    x    x    -    x     argmax of P (eq. 3-4), trained with the matching loss (eq. 5)
    C1   C       x    -    -    x    -     heuristic merger of Panoptic FPN [12] on Mask R-CNN outputs
    C2   C       x    -    -    -    x     argmax of Psi (masks pasted into Psi, variant C of Fig. 4)
    D1   D       x    x    x    x    -     heuristic merger on the end-to-end trained model
    D2   D       x    x    x    -    x     argmax of P: the paper's full method

Supplementary rows (optional in a study; :data:`SUPPLEMENTARY_ROWS`), beyond Table 1::

    D2gt Dgt     x    x    x    -    x     D2 trained on GROUND-TRUTH detections (supplementary Table C):
                                           ``train_detections: ground_truth``, predicted detections at test

"C1 and C2, as well as D1 and D2, are identical models using different inference methods" (sec. 4.1): four
trainings (A, B, C, D) and six evaluations. Rows A and C have no matching loss (``train_end_to_end: false``):
their network learns the detector and the semantic head V only (the panoptic head has no parameter without
the affinity head), and at inference Psi is still built from V and the detections and its argmax taken.

Study parameters (``conf/base/parameters_ablation_<dataset>.yml``, key ``ablation_<dataset>``)::

    outputs: {models_dir, predictions_dir, report_dir}   # folders of bundles, predictions, reports
    base: {...}           # a training namespace (schema of unipan_pipeline.experiment.train) WITHOUT
                          # output_dir / trainer.checkpoint_dir: shared by the four trainings
    evaluation: {...}     # an evaluation namespace (schema of unipan_pipeline.experiment.evaluate) WITHOUT
                          # the paths and the registry: shared by the six evaluations
    models: {A: {use_masks: false, ...}, ...}            # ModelConfig overrides of base.model per model
    rows: {A: {inference: argmax}, C1: {inference: heuristic}, ...}   # the inference of each row (and,
                          # optionally, the inference-only heuristic_* fields of ModelConfig)

Resolution (:func:`training_params`, :func:`row_model_config`): model M is trained with
``ModelConfig(**{**base.model, **models[M]})``; row R is evaluated with
``ModelConfig(**{**base.model, **models[ROW_MODEL[R]], **rows[R]})``. Which row uses
which model is the paper's design (:data:`ROW_MODEL`), not a setting. The Kedro pipelines
(``pipelines/ablation_cityscapes``, ``ablation_coco``) put each row in its own namespace and each model's
training in the namespace of its argmax row (:data:`TRAINING_ROW`); see that package for ``--namespaces``.

Figures are reported like Table 1, in percent. The paper's claims are compared with the measured numbers by
:func:`claims_status`; whether a claim holds is an observation about one run, never an expectation of the
code.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from unipan_pipeline.model import ModelConfig

ROWS: tuple[str, ...] = ("A", "B", "C1", "C2", "D1", "D2")
"""Rows of Table 1, in the paper's order."""
MODELS: tuple[str, ...] = ("A", "B", "C", "D")
"""The trained models behind the rows."""
STUDY_KEYS = {"outputs", "base", "evaluation", "models", "rows"}
OUTPUT_KEYS = {"models_dir", "predictions_dir", "report_dir"}
ROW_KEYS = {"inference"}
ROW_INFERENCE_KEYS = {
    "heuristic_score_thresh",
    "heuristic_overlap_thresh",
    "heuristic_stuff_area",
    "heuristic_mask_thresh",
}
"""ModelConfig fields a row may set besides ``inference``: they act at inference only, so rows sharing a
trained model may differ in them (e.g. the merger's stuff-area limit, scaled to the image size)."""
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
    _check(study, f"params:{where}", STUDY_KEYS)
    _check(study["outputs"], f"params:{where}.outputs", OUTPUT_KEYS)
    base = study["base"]
    if not isinstance(base, Mapping) or not isinstance(base.get("model"), Mapping):
        raise ValueError(f"params:{where}.base must be a training namespace with a `model` mapping")
    if "output_dir" in base or "checkpoint_dir" in (base.get("trainer") or {}):
        raise ValueError(
            f"params:{where}.base: output_dir / trainer.checkpoint_dir are set per model from "
            f"outputs.models_dir; remove them"
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
        row_model_config(study, row, where=where)  # ModelConfig validation (e.g. heuristic without masks)
    evaluation_params(study, ROWS[0], where=where)


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
    """Bundle folder of a trained model: ``<outputs.models_dir>/<model>``."""
    return Path(str(study["outputs"]["models_dir"])) / model


def training_params(study: Mapping[str, Any], model: str, where: str = "ablation") -> dict[str, Any]:
    """The training namespace of one model: ``base`` with the model's switches merged into ``base.model``,
    ``output_dir = <models_dir>/<model>`` and ``trainer.checkpoint_dir = <models_dir>/<model>/checkpoints``.
    The model's inference is the base one (argmax unless changed); rows choose theirs at evaluation."""
    if model not in study_models(study):
        raise ValueError(
            f"params:{where}.models: no model {model!r}; the study has {study_models(study)} "
            f"(supplementary models must be declared: {list(SUPPLEMENTARY_MODELS)})"
        )
    params = copy.deepcopy(dict(study["base"]))
    params["model"] = {**dict(params["model"]), **dict(study["models"][model])}
    out = model_dir(study, model)
    params["output_dir"] = out.as_posix()
    params["trainer"] = {
        **dict(params.get("trainer") or {}),
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


def evaluation_params(study: Mapping[str, Any], row: str, where: str = "ablation") -> dict[str, Any]:
    """The evaluation namespace of one row: ``evaluation`` plus per-row paths (predictions
    ``<predictions_dir>/<row>``, reports ``<report_dir>/rows/<row>/``); no registration."""
    params = copy.deepcopy(dict(study["evaluation"]))
    for key in ("predictions_dir", "report_dir", "metrics_path", "register"):
        if key in params:
            raise ValueError(f"params:{where}.evaluation.{key} is set per row by the study; remove it")
    report = Path(str(study["outputs"]["report_dir"])) / "rows" / row
    params["predictions_dir"] = (Path(str(study["outputs"]["predictions_dir"])) / row).as_posix()
    params["report_dir"] = (report / "evaluation").as_posix()
    params["metrics_path"] = (report / "metrics.json").as_posix()
    return params


# ------------------------------------------------------------------------------------------------ table
def _percent(value: Any) -> float | None:
    if value is None:
        return None
    v = float(value)
    return None if not math.isfinite(v) else round(100.0 * v, 2)


def result_table(row_results: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Table 1 of this study: one row per result (``row``, ``flags``, ``metrics`` as fractions), in the
    paper's row order, metrics in percent (NaN where undefined, e.g. AP mask without masks)."""
    by_row = {str(r["row"]): r for r in row_results}
    records = []
    for row in [r for r in ROWS if r in by_row] + sorted(set(by_row) - set(ROWS)):
        res = by_row[row]
        record: dict[str, Any] = {"Model": row, **{f: bool(res["flags"][f]) for f in FLAGS}}
        for title, key in METRIC_COLUMNS:
            record[title] = _percent((res.get("metrics") or {}).get(key))
        records.append(record)
    table = pd.DataFrame.from_records(records, columns=list(TABLE_COLUMNS))
    for title, _ in METRIC_COLUMNS:
        table[title] = table[title].astype("float64")
    return table


def paper_table() -> pd.DataFrame:
    """Table 1 as printed in the paper (Cityscapes val, percent; NaN = not applicable)."""
    records = [
        {
            "Model": row,
            **{f: values[f] for f in FLAGS},
            **{title: values[key] for title, key in METRIC_COLUMNS},
        }
        for row, values in PAPER_TABLE1.items()
    ]
    table = pd.DataFrame.from_records(records, columns=list(TABLE_COLUMNS))
    for title, _ in METRIC_COLUMNS:
        table[title] = table[title].astype("float64")
    return table


def _pq(table: pd.DataFrame, row: str, column: str = "PQ all") -> float | None:
    hit = table.loc[table["Model"] == row, column]
    if hit.empty or pd.isna(hit.iloc[0]):
        return None
    return float(hit.iloc[0])


def claims_status(table: pd.DataFrame) -> list[dict[str, Any]]:
    """Each claim of the paper checked on a measured table (PQ in percent): ``observed`` is ``"holds"``
    (higher PQ), ``"does not hold"`` (equal or lower) or ``"undefined"`` (a row is missing / PQ undefined);
    ``delta`` is the measured PQ difference, ``paper_delta`` the paper's."""
    paper = paper_table()
    out = []
    for claim in CLAIMS:
        better, worse = _pq(table, claim.better), _pq(table, claim.worse)
        delta = None if better is None or worse is None else round(better - worse, 2)
        observed = "undefined" if delta is None else ("holds" if delta > 0 else "does not hold")
        paper_better, paper_worse = _pq(paper, claim.better), _pq(paper, claim.worse)
        assert paper_better is not None and paper_worse is not None
        out.append(
            {
                "claim": claim.name,
                "key": claim.key,
                "what": claim.what,
                "pq_better": better,
                "pq_worse": worse,
                "delta": delta,
                "paper_delta": round(paper_better - paper_worse, 2),
                "observed": observed,
            }
        )
    return out


def metrics_by_row(table: pd.DataFrame) -> dict[str, dict[str, float | None]]:
    """``{row: {pq, pq_th, pq_st, sq, rq, miou, ap_mask, ap_box}}`` in percent (``metrics.json`` for DVC)."""
    out: dict[str, dict[str, float | None]] = {}
    for rec in table.to_dict(orient="records"):
        out[str(rec["Model"])] = {
            key: None if pd.isna(rec[title]) else float(rec[title]) for title, key in METRIC_COLUMNS
        }
    return out


def _markdown(table: pd.DataFrame) -> str:
    shown = table.copy()
    for f in FLAGS:
        shown[f] = shown[f].map(lambda v: "✓" if bool(v) else "")
    for title, _ in METRIC_COLUMNS:  # NaN -> None, which tabulate prints as missingval
        shown[title] = shown[title].astype(object).where(shown[title].notna(), None)
    return shown.to_markdown(index=False, floatfmt=".1f", missingval="—")


def report_markdown(
    table: pd.DataFrame,
    claims: Sequence[Mapping[str, Any]],
    *,
    title: str,
    notes: Sequence[str] = (),
) -> str:
    """The study's table, the paper's Table 1 beside it and the claims as observed, as Markdown."""
    lines = [f"# {title}", "", "## Measured (this study, percent)", "", _markdown(table), ""]
    lines += ["## Paper, Table 1 (Cityscapes val, ResNet-50, percent)", "", _markdown(paper_table()), ""]
    lines += ["## The paper's claims (PQ all), as observed in this study", ""]
    claim_table = pd.DataFrame(
        [
            {
                "claim": c["claim"],
                "what": c["what"],
                "paper ΔPQ": c["paper_delta"],
                "measured ΔPQ": c["delta"],
                "observed": c["observed"],
            }
            for c in claims
        ]
    )
    lines += [claim_table.to_markdown(index=False, floatfmt=".2f", missingval="—"), ""]
    lines += [f"- {n}" for n in notes]
    return "\n".join(lines).rstrip() + "\n"
