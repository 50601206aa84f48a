"""The study as Markdown: intervals, seeds, thresholds, the paper's Table 1, the claims, the affinity at test.

See :mod:`unipan_pipeline.ablation`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from .results import (  # _ordered: the paper's row order, shared by the tables
    AFFINITY_KEYS,
    _ordered,
    affinity_table,
    interval_table,
    paper_table,
    seed_table,
)
from .study import DEFAULT_CONFIDENCE, FLAGS, METRIC_COLUMNS, ROW_THRESHOLDS, seed_name


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


def _affinity_markdown(affinity: pd.DataFrame, level: str) -> str:
    def delta(row: pd.Series, suffix: str) -> str:
        low, high = row[f"ΔPQ{suffix} low"], row[f"ΔPQ{suffix} high"]
        span = "" if low is None or pd.isna(low) else f" [{_fmt(low, 2)}, {_fmt(high, 2)}]"
        return f"{_fmt(row[f'ΔPQ{suffix}'], 2)}{span} {row[f'ΔPQ{suffix} observed']}"

    shown = pd.DataFrame(
        [
            {
                "Model": r["Model"],
                "seeds": int(r["seeds"]),
                **{title: _fmt(r[title], 3 if title.startswith("|") else 2) for title, _ in AFFINITY_KEYS},
                "PQ argmax(P) / argmax(Psi)": f"{_fmt(r['PQ argmax(P)'])} / {_fmt(r['PQ argmax(Psi)'])}",
                f"ΔPQ, {level}": delta(r, ""),
                "PQ th argmax(P) / argmax(Psi)": (
                    f"{_fmt(r['PQ th argmax(P)'])} / {_fmt(r['PQ th argmax(Psi)'])}"
                ),
                f"ΔPQ th, {level}": delta(r, " th"),
            }
            for _, r in affinity.iterrows()
        ]
    )
    return shown.to_markdown(index=False)


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
    affinity = affinity_table(row_results, confidence)
    if not affinity.empty:
        lines += [
            "## The affinity at test: argmax(P) vs argmax(Psi) of the same weights "
            f'("without the affinity at test"), paired per seed, {level} interval',
            "",
            _affinity_markdown(affinity, level),
            "",
        ]
    lines += [f"- {note}" for note in notes]
    return "\n".join(lines).rstrip() + "\n"
