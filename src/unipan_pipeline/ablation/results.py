"""Results: means over seeds with Student-t intervals, claims, tables, the Markdown report.

See :mod:`unipan_pipeline.ablation`."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd
from scipy import stats

from .study import (
    CLAIMS,
    DEFAULT_CONFIDENCE,
    FLAGS,
    METRIC_COLUMNS,
    PAPER_TABLE1,
    ROWS,
    TABLE_COLUMNS,
    study_claims,
)


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
    Student-t interval, and :func:`observe`'s verdict; ``paper_delta`` is Table 1's difference (``None`` for
    a supplementary claim, :func:`~.study.study_claims`: judged when the results have both of its rows)."""
    by_row = {str(r["row"]): seed_metrics(r) for r in row_results}
    paper = {c["key"]: c["paper_delta"] for c in claims_status(paper_table())}
    out = []
    for claim in study_claims(by_row):
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
                "paper_delta": paper.get(claim.key),
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


AFFINITY_KEYS: tuple[tuple[str, str], ...] = (
    ("cells changed %", "affinity/cells_changed"),
    ("thing cells changed %", "affinity/thing_cells_changed"),
    ("|P - Psi| / |Psi|", "affinity/relative_change"),
)
"""The affinity's effect on the stride-4 grid of an evaluation (:mod:`unipan_pipeline.evaluation.
affinity_effect`): share of cells where argmax(P) != argmax(Psi), the same over thing cells, and
|P - Psi| / |Psi|."""


def affinity_table(
    row_results: Sequence[Mapping[str, Any]], confidence: float = DEFAULT_CONFIDENCE
) -> pd.DataFrame:
    """The affinity at test, per row evaluated with argmax(P) (those with ``pq_without_affinity``): the
    effect figures of :data:`AFFINITY_KEYS` (means over seeds) and the row "without the affinity at test"
    (argmax(Psi) of the same weights) as paired differences ``PQ(argmax P) - PQ(argmax Psi)`` (all, things)
    per seed: mean, Student-t interval and :func:`observe`'s verdict, in percent."""
    records = []
    for res in _ordered(row_results):
        per_seed = seed_metrics(res)
        if not any(_finite(m.get("pq_without_affinity")) is not None for m in per_seed.values()):
            continue
        record: dict[str, Any] = {"Model": str(res["row"]), "seeds": len(per_seed)}
        for title, key in AFFINITY_KEYS:
            scale = 1.0 if key.endswith("relative_change") else 100.0
            iv = mean_interval([m.get(key) for m in per_seed.values()], confidence)
            record[title] = None if iv.mean is None else round(scale * iv.mean, 3)
        for suffix, key in (("", "pq"), (" th", "pq_th")):
            with_aff = [_finite(m.get(key)) for m in per_seed.values()]
            without = [_finite(m.get(f"{key}_without_affinity")) for m in per_seed.values()]
            deltas = [100.0 * (a - b) for a, b in zip(with_aff, without, strict=True) if None not in (a, b)]
            iv = mean_interval(deltas, confidence)
            record[f"PQ{suffix} argmax(Psi)"] = _percent_mean(without)
            record[f"PQ{suffix} argmax(P)"] = _percent_mean(with_aff)
            record[f"ΔPQ{suffix}"] = None if iv.mean is None else round(iv.mean, 3)
            record[f"ΔPQ{suffix} low"] = None if iv.low is None else round(iv.low, 3)
            record[f"ΔPQ{suffix} high"] = None if iv.high is None else round(iv.high, 3)
            record[f"ΔPQ{suffix} observed"] = observe(iv)
        records.append(record)
    return pd.DataFrame.from_records(records)


def _percent_mean(values: Sequence[float | None]) -> float | None:
    """100 x the mean of the finite fractions (:func:`mean_interval`), rounded; None without any."""
    mean = mean_interval(values).mean
    return None if mean is None else round(100.0 * mean, 3)


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
