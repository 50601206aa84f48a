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
    seeds: [0, 1, 2]      # every model is trained once per seed (a list, or N for 0..N-1; default three)
    confidence: 0.95      # level of the Student-t intervals (optional, default 0.95)
    base: {...}           # a training namespace (schema of unipan_pipeline.experiment.train) WITHOUT
                          # output_dir / trainer.checkpoint_dir / trainer.seed: shared by the trainings
    evaluation: {...}     # an evaluation namespace (schema of unipan_pipeline.experiment.evaluate) WITHOUT
                          # the paths and the registry: shared by the evaluations
    models: {A: {use_masks: false, ...}, ...}            # ModelConfig overrides of base.model per model
    rows: {A: {inference: argmax, panoptic_min_score: 0.5}, C1: {inference: heuristic, heuristic_...}}
                          # each row's inference and EVERY threshold that inference uses
                          # (:data:`ROW_THRESHOLDS`), stated explicitly per row

Resolution (:func:`training_params`, :func:`row_model_config`): model M with seed s is trained with
``ModelConfig(**{**base.model, **models[M]})`` and ``trainer.seed = s`` into ``<models_dir>/<M>/seed<s>/``;
row R is evaluated, for every seed, with ``ModelConfig(**{**base.model, **models[ROW_MODEL[R]], **rows[R]})``
(the row's keys act at inference only: the trained weights are shared). Which row uses which model is the
paper's design (:data:`ROW_MODEL`), not a setting. The Kedro pipelines (``pipelines/ablation_cityscapes``,
``ablation_coco``) put each row in its own namespace and each model's training in the namespace of its argmax
row (:data:`TRAINING_ROW`); see that package for ``--namespaces``.

Figures are reported like Table 1, in percent, as the mean over the seeds with its Student-t interval
(:func:`mean_interval`). Each claim of the paper is judged from the interval of the PAIRED differences (row X
minus row Y of the same seed, :func:`claims_observed`): ``holds`` (interval above 0), ``reversed`` (below 0)
or ``within noise`` (it contains 0); what is observed is computed from the measurements, never expected by
the code.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from scipy import stats

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


# ------------------------------------------------------------------------------------------------ seeds
@dataclass(frozen=True)
class Interval:
    """The mean of ``n`` values and its two-sided Student-t interval at level ``confidence``:
    ``mean -+ t_{(1+confidence)/2, n-1} * std / sqrt(n)``, ``std`` the sample standard deviation (n - 1).
    ``std``/``low``/``high`` are None with fewer than two values, everything but ``n`` with none."""

    n: int
    mean: float | None
    std: float | None
    low: float | None
    high: float | None
    confidence: float

    @property
    def half_width(self) -> float | None:
        return None if self.low is None or self.mean is None else self.mean - self.low

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _finite(value: Any) -> float | None:
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(float(value)) else None


def mean_interval(values: Sequence[Any], confidence: float = DEFAULT_CONFIDENCE) -> Interval:
    """:class:`Interval` of the finite values among ``values`` (None / NaN are left out)."""
    finite = [v for v in (_finite(x) for x in values) if v is not None]
    n = len(finite)
    if n == 0:
        return Interval(0, None, None, None, None, confidence)
    mean = math.fsum(finite) / n
    if n == 1:
        return Interval(1, mean, None, None, None, confidence)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in finite) / (n - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2.0, n - 1)) * std / math.sqrt(n)
    return Interval(n, mean, std, mean - half, mean + half, confidence)


def seed_metrics(result: Mapping[str, Any]) -> dict[int, dict[str, Any]]:
    """``{seed: metrics (fractions)}`` of a row result (``seeds``: ``[{seed, metrics, ...}]``); a result of
    one evaluation without ``seeds`` counts as its ``seed`` (default 0)."""
    if "seeds" in result:
        return {int(r["seed"]): dict(r.get("metrics") or {}) for r in result["seeds"]}
    return {int(result.get("seed", 0)): dict(result.get("metrics") or {})}


def aggregate_seeds(
    per_seed: Mapping[int, Mapping[str, Any]], confidence: float = DEFAULT_CONFIDENCE
) -> tuple[dict[str, float | None], dict[str, dict[str, Any]]]:
    """Aggregate of one row over its seeds: ``(means, intervals)`` for every numeric metric key (same unit
    as the inputs); ``intervals[key]`` is :meth:`Interval.as_dict`."""
    keys = sorted({k for m in per_seed.values() for k, v in m.items() if _finite(v) is not None})
    means: dict[str, float | None] = {}
    intervals: dict[str, dict[str, Any]] = {}
    for key in keys:
        interval = mean_interval([m.get(key) for m in per_seed.values()], confidence)
        means[key] = interval.mean
        intervals[key] = interval.as_dict()
    return means, intervals


def observe(interval: Interval) -> str:
    """What an interval of a difference (better minus worse) says: ``holds`` (entirely above 0),
    ``reversed`` (entirely below 0), ``within noise`` (it contains 0); ``one seed: no interval`` with a single
    pair, ``undefined`` with none."""
    if interval.n == 0:
        return "undefined"
    if interval.low is None or interval.high is None:
        return "one seed: no interval"
    if interval.low > 0:
        return "holds"
    if interval.high < 0:
        return "reversed"
    return "within noise"


def _ordered(row_results: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    by_row = {str(r["row"]): r for r in row_results}
    return [by_row[r] for r in [r for r in ROWS if r in by_row] + sorted(set(by_row) - set(ROWS))]


def claims_observed(
    row_results: Sequence[Mapping[str, Any]], confidence: float = DEFAULT_CONFIDENCE, metric: str = "pq"
) -> list[dict[str, Any]]:
    """Each claim of the paper judged on the study: the per-seed PAIRED differences ``100 * (metric of the
    better row - metric of the worse row)`` over the seeds both rows have (the same seed = the same data
    order and augmentations, and for D2 vs D1 the same weights), their mean, standard deviation and
    Student-t interval, and :func:`observe`'s verdict; ``paper_delta`` is Table 1's difference."""
    by_row = {str(r["row"]): seed_metrics(r) for r in row_results}
    paper = {c["key"]: c["paper_delta"] for c in claims_status(paper_table())}
    out = []
    for claim in CLAIMS:
        better, worse = by_row.get(claim.better, {}), by_row.get(claim.worse, {})
        deltas: dict[int, float] = {}
        for seed in sorted(set(better) & set(worse)):
            b, w = _finite(better[seed].get(metric)), _finite(worse[seed].get(metric))
            if b is not None and w is not None:
                deltas[seed] = 100.0 * (b - w)
        interval = mean_interval(list(deltas.values()), confidence)
        means = [mean_interval([m.get(metric) for m in side.values()]).mean for side in (better, worse)]
        out.append(
            {
                "claim": claim.name,
                "key": claim.key,
                "what": claim.what,
                "metric": metric,
                "pq_better": None if means[0] is None else round(100 * means[0], 2),
                "pq_worse": None if means[1] is None else round(100 * means[1], 2),
                "deltas": {str(k): round(v, 3) for k, v in deltas.items()},
                "n_seeds": interval.n,
                "delta": None if interval.mean is None else round(interval.mean, 3),
                "delta_std": None if interval.std is None else round(interval.std, 3),
                "delta_low": None if interval.low is None else round(interval.low, 3),
                "delta_high": None if interval.high is None else round(interval.high, 3),
                "confidence": confidence,
                "paper_delta": paper[claim.key],
                "observed": observe(interval),
            }
        )
    return out


def seed_table(row_results: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One line per row and seed: ``Model``, ``seed`` and Table 1's metrics in percent."""
    records = []
    for res in _ordered(row_results):
        for seed, metrics in sorted(seed_metrics(res).items()):
            record: dict[str, Any] = {"Model": str(res["row"]), "seed": seed}
            for title, key in METRIC_COLUMNS:
                record[title] = _percent(metrics.get(key))
            records.append(record)
    table = pd.DataFrame.from_records(records, columns=["Model", "seed", *(t for t, _ in METRIC_COLUMNS)])
    for title, _ in METRIC_COLUMNS:
        table[title] = table[title].astype("float64")
    return table


INTERVAL_SUFFIXES: tuple[str, ...] = ("", " sd", " low", " high")
"""Columns of :func:`interval_table` per metric: mean, standard deviation, interval bounds."""


def interval_table(
    row_results: Sequence[Mapping[str, Any]], confidence: float = DEFAULT_CONFIDENCE
) -> pd.DataFrame:
    """One line per row: ``Model``, Table 1's settings, ``seeds`` (how many) and, per metric of Table 1 (in
    percent), the mean over the seeds, its standard deviation (``<title> sd``) and Student-t interval
    (``<title> low`` / ``<title> high``); NaN where undefined."""
    records = []
    for res in _ordered(row_results):
        per_seed = seed_metrics(res)
        record: dict[str, Any] = {
            "Model": str(res["row"]),
            **{f: bool(res["flags"][f]) for f in FLAGS},
            "seeds": len(per_seed),
        }
        for title, key in METRIC_COLUMNS:
            values = [None if (v := _finite(m.get(key))) is None else 100.0 * v for m in per_seed.values()]
            iv = mean_interval(values, confidence)
            for suffix, value in zip(INTERVAL_SUFFIXES, (iv.mean, iv.std, iv.low, iv.high), strict=True):
                record[title + suffix] = None if value is None else round(value, 3)
        records.append(record)
    columns = ["Model", *FLAGS, "seeds", *(t + x for t, _ in METRIC_COLUMNS for x in INTERVAL_SUFFIXES)]
    table = pd.DataFrame.from_records(records, columns=columns)
    for column in columns[len(FLAGS) + 2 :]:
        table[column] = table[column].astype("float64")
    return table


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


def _fmt(value: Any, digits: int = 1) -> str:
    return "—" if value is None or pd.isna(value) else f"{float(value):.{digits}f}"


def _interval_markdown(intervals: pd.DataFrame) -> str:
    """Cells ``mean ± half-width`` (one seed: the value alone)."""
    records = []
    for rec in intervals.to_dict(orient="records"):
        shown: dict[str, Any] = {"Model": rec["Model"], **{f: "✓" if rec[f] else "" for f in FLAGS}}
        shown["seeds"] = int(rec["seeds"])
        for title, _ in METRIC_COLUMNS:
            mean, low = rec[title], rec[title + " low"]
            shown[title] = _fmt(mean) if pd.isna(low) else f"{_fmt(mean)} ± {_fmt(mean - low)}"
        records.append(shown)
    return pd.DataFrame(records).to_markdown(index=False)


def _thresholds_markdown(row_results: Sequence[Mapping[str, Any]]) -> str:
    keys = [k for keys in ROW_THRESHOLDS.values() for k in keys]
    records = [
        {
            "Model": str(res["row"]),
            "inference": res.get("inference"),
            **{k: (res.get("thresholds") or {}).get(k, "") for k in keys},
        }
        for res in _ordered(row_results)
    ]
    return pd.DataFrame(records, columns=["Model", "inference", *keys]).to_markdown(index=False)


def _seeds_markdown(seeds: pd.DataFrame, title: str = "PQ all") -> str:
    wide = seeds.pivot(index="Model", columns="seed", values=title)
    order = [r for r in seeds["Model"].drop_duplicates()]
    wide = wide.loc[order]
    wide.columns = [seed_name(c) for c in wide.columns]
    return wide.reset_index().to_markdown(index=False, floatfmt=".1f", missingval="—")


def report_markdown(
    row_results: Sequence[Mapping[str, Any]],
    claims: Sequence[Mapping[str, Any]],
    *,
    title: str,
    confidence: float = DEFAULT_CONFIDENCE,
    notes: Sequence[str] = (),
) -> str:
    """The study as Markdown: mean ± interval per row and metric, PQ per seed, the rows' inference
    thresholds, the paper's Table 1 and the claims as observed from the paired differences."""
    level = f"{100 * confidence:g} %"
    intervals = interval_table(row_results, confidence)
    n = sorted({int(v) for v in intervals["seeds"]})
    lines = [f"# {title}", ""]
    lines += [
        f"## Measured (this study, percent): mean over the seeds ± half-width of its {level} "
        f"Student-t interval ({'/'.join(map(str, n))} seeds)",
        "",
        _interval_markdown(intervals),
        "",
        "## PQ all per seed",
        "",
        _seeds_markdown(seed_table(row_results)),
        "",
        "## Inference thresholds of each row",
        "",
        _thresholds_markdown(row_results),
        "",
        "## Paper, Table 1 (Cityscapes val, ResNet-50, percent)",
        "",
        _markdown(paper_table()),
        "",
        f"## The paper's claims (PQ all): paired differences per seed, mean and {level} interval",
        "",
    ]
    claim_table = pd.DataFrame(
        [
            {
                "claim": c["claim"],
                "what": c["what"],
                "paper ΔPQ": _fmt(c["paper_delta"]),
                "measured ΔPQ": _fmt(c["delta"], 2),
                f"{level} interval": (
                    "—"
                    if c["delta_low"] is None
                    else f"[{_fmt(c['delta_low'], 2)}, {_fmt(c['delta_high'], 2)}]"
                ),
                "per seed": ", ".join(f"{float(v):+.2f}" for v in c["deltas"].values()) or "—",
                "observed": c["observed"],
            }
            for c in claims
        ]
    )
    lines += [claim_table.to_markdown(index=False), ""]
    lines += [f"- {note}" for note in notes]
    return "\n".join(lines).rstrip() + "\n"
