"""Markdown tables of a correction run, computed from its JSON record alone.

:func:`correction_tables` reads what :meth:`hf_sparc.workflows.correction.CorrectionResult.to_dict`
writes (per-item outcomes of every selection and seed) and renders the behaviour table and the
capability table with 95% bootstrap intervals and paired tests
(:mod:`hf_sparc.reports.statistics`). The run's own ``report.md`` and the tables of
docs/RESULTS.md (``scripts/render_results.py``) both come from here, so a committed table is
exactly what its JSON renders.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from hf_sparc.reports.statistics import bootstrap_change, mcnemar

__all__ = ["behavior_table", "capability_table", "correction_tables", "item_means"]

_LABELS = {
    "toxic_rate": "toxic rate (profanity-check)",
    "toxic_rate_jigsaw": "toxic rate (Jigsaw BiLSTM)",
    "mean_toxicity": "mean toxicity (profanity-check)",
    "mean_toxicity_jigsaw": "mean toxicity (Jigsaw BiLSTM)",
}


def item_means(seeds: Sequence[Mapping[str, Sequence[float]]], key: str) -> list[float]:
    """Per item, the mean over seeds of outcome ``key`` (one seed: the outcomes themselves)."""
    columns = [seed[key] for seed in seeds]
    out = []
    for values in zip(*columns, strict=True):
        finite = [v for v in values if math.isfinite(v)]
        out.append(sum(finite) / len(finite) if finite else math.nan)
    return out


def format_p(value: float) -> str:
    """A p-value cell: three decimals, or ``<0.001``."""
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def _value(row: Mapping[str, float], key: str, digits: int) -> str:
    sd = row.get(f"{key}_sd")
    return f"{row[key]:.{digits}f}" + ("" if sd is None else f" ± {sd:.{digits}f}")


def behavior_table(data: Mapping[str, Any], metrics: Sequence[str]) -> str:
    """One row per selection: the units it cuts or dampens, each of ``metrics`` with its relative
    change from base (95% CI), the paired test against base and against the main method."""
    rows, outcomes, main = data["rows"], data["outcomes"], data["settings"]["method"]
    header = ["selection", "candidates", "units"]
    for metric in metrics:
        header += [_LABELS.get(metric, metric), "Δ vs base [95% CI]", "p vs base", f"p vs {main}"]
    lines = ["| " + " | ".join(header) + " |", "|---|---|---:|" + "---:|" * (4 * len(metrics))]
    for name, row in rows.items():
        # a rule such as "protect 0.5 of |R_general|" must not split the markdown cell
        cells = [name, data.get("rules", {}).get(name, "").replace("|", "\\|"), f"{row.get('pruned', 0):.0f}"]
        for metric in metrics:
            mine = item_means(outcomes[name], metric)
            base = item_means(outcomes["base"], metric)
            cells.append(_value(row, metric, 4))
            if name == "base":
                cells += ["", "", ""]
                continue
            cells.append(bootstrap_change(base, mine).cell())
            cells.append(format_p(mcnemar(base, mine)))
            cells.append("" if name == main else format_p(mcnemar(item_means(outcomes[main], metric), mine)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def capability_table(data: Mapping[str, Any]) -> str:
    """Perplexity and zero-shot accuracy per selection: perplexity's relative change (95% CI),
    the change of mean accuracy in points (95% CI, paired test against base) and per task."""
    rows, outcomes = data["rows"], data["outcomes"]
    tasks = list(data["settings"].get("tasks") or ())
    header = ["selection", "perplexity", "Δ vs base [95% CI]"]
    if tasks:
        header += ["mean accuracy", "Δ vs base [95% CI]", "p vs base", *tasks]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    base = outcomes["base"]
    for name, row in rows.items():
        seeds = outcomes[name]
        cells = [name, _value(row, "perplexity", 2)]
        if name == "base":
            cells.append("")
        else:
            cells.append(perplexity_change(base, seeds).cell(1))
        if tasks:
            keys = [f"accuracy:{task}" for task in tasks]
            mine = [v for key in keys for v in item_means(seeds, key)]
            theirs = [v for key in keys for v in item_means(base, key)]
            cells.append(_value(row, "accuracy", 4))
            if name == "base":
                cells += ["", ""]
            else:
                change = bootstrap_change(theirs, mine, relative=False)
                cells += [change.cell(1), format_p(mcnemar(theirs, mine))]
            cells += [f"{row[key]:.3f}" for key in keys]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def perplexity_change(base: list, seeds: list):
    """Relative change of perplexity (pooled over texts, ``exp`` of the token-weighted mean NLL)
    from ``base``'s outcomes to ``seeds``' (seed-averaged), with its paired bootstrap interval."""
    return bootstrap_change(
        item_means(base, "nll"), item_means(seeds, "nll"),
        base_weights=base[0]["tokens"], other_weights=seeds[0]["tokens"], exp=True,
    )  # fmt: skip


def correction_tables(data: Mapping[str, Any]) -> str:
    """Both tables of a correction record, with a line on how to read them."""
    metrics = data.get("table_metrics") or [data["metric"]]
    n_items = len(data["outcomes"]["base"][0][metrics[0]])
    seeds = max(len(seeds) for seeds in data["outcomes"].values())
    note = (
        f"{n_items} held-out items ({data['settings'].get('split', 'dev')} split); Δ: relative change "
        "from base with a 95% paired bootstrap interval (2,000 resamples of items); p: exact paired "
        f"test (McNemar on 0/1 outcomes; with {seeds} random seeds, the sign test on seed-averaged "
        "outcomes); ± : standard deviation over seeds."
    )
    return "\n\n".join([behavior_table(data, metrics), capability_table(data), note])
