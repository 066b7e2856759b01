"""Views of the benchmark records (``benchmarks/*.py --record``) for docs/BENCHMARKS.md.

Each function renders one record's table, so that the benchmark page, like the results page, is
generated from JSON and never typed (:mod:`hf_sparc.reports.render` registers them in ``VIEWS``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from hf_sparc.reports.statistics import bootstrap_change, mcnemar


def _command(data: Mapping[str, Any]) -> str:
    versions = data.get("versions", {})
    return (
        f"Command: `{data.get('command', '?')}` (torch {versions.get('torch', '?')}, "
        f"hf-sparc {versions.get('hf-sparc', '?')})."
    )


def attribution_cost(data: Mapping[str, Any]) -> str:
    """The ratios of ``benchmarks/attribution_cost.py``, then each case's CPU seconds and peak."""
    lines = ["| figure | target | ratio |", "|---|---|---:|"]
    lines += [f"| {label} | {r['target']} | {r['ratio']:.2f} |" for label, r in data["ratios"].items()]
    cases = ", ".join(
        f"{name} {r['seconds']:.2f} s / {r['peak_mb']:,.0f} MB" for name, r in data["cases"].items()
    )
    return "\n".join(lines) + f"\n\nCPU seconds per call / peak MB: {cases}.\n\n" + _command(data)


def scale_series(row: Mapping[str, Any]) -> str:
    """The series a ``benchmarks/scale.py`` row belongs to (the key of its slopes): the case, and
    for budgeted runs the budget's share of the train step's peak."""
    share = row.get("budget_share")
    return row["case"] if share is None else f"{row['case']} @ {share:g}"


def _label(row: Mapping[str, Any]) -> str:
    share = row.get("budget_share")
    return row["case"] if share is None else f"{row['case']}, max_memory = {share:g} × train step peak"


def scale(data: Mapping[str, Any]) -> str:
    """Seconds per token and peak memory per case and shape, each shape's peak against its train
    step, the log-log slopes, and the budgeted runs against the unbudgeted one."""
    rows = data["rows"]
    shapes = list(dict.fromkeys(r["shape"] for r in rows))
    series = {scale_series(r): _label(r) for r in rows}
    train = {r["shape"]: r["peak_mb"] for r in rows if r["case"] == "train_step" and "error" not in r}
    header = ["case"] + [
        f"{s} {part}" for s in shapes for part in ("s/token", "peak MB", "peak / train step")
    ]
    lines = ["| " + " | ".join([*header, "slope time / memory"]) + " |", "|---|" + "---:|" * len(header)]
    slopes = data.get("slopes", {})
    for key, label in series.items():
        cells = [label]
        for shape in shapes:
            row = next((r for r in rows if r["shape"] == shape and scale_series(r) == key), None)
            if row is None:
                cells += ["–"] * 3
            elif "error" in row:
                cells += ["refused" if "MemoryError" in row["error"] else "failed", "–", "–"]
            else:
                ratio = row["peak_mb"] / train[shape] if shape in train else float("nan")
                cells += [f"{row['seconds_per_token']:.4f}", f"{row['peak_mb']:,.0f}", f"{ratio:.2f}"]
        slope = slopes.get(key)
        cells.append("–" if slope is None else f"{slope['time']:.2f} / {slope['memory']:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    for run, modules in data.get("budget_vs_free", {}).items():
        parts = [
            f"{name}: {'bitwise equal' if c['bitwise_equal'] else 'max relative difference'} "
            f"{'' if c['bitwise_equal'] else format(c['max_relative_difference'], '.1e')}".rstrip()
            + f", top-0.1% overlap {c['top_0.1%_overlap']:.2f}"
            for name, c in modules.items()
        ]
        lines.append(f"\nBudgeted vs default relevance, {run}: " + "; ".join(parts) + ".")
    plans = [f"{r['shape']} {scale_series(r)}: {r['plan']}" for r in rows if r.get("plan")]
    if plans:
        lines.append("\nThe planner's choices: " + "; ".join(plans) + ".")
    return "\n".join(lines) + "\n\n" + _command(data)


def compression_curve(data: Mapping[str, Any]) -> str:
    """Perplexity after compression per number of reference passages, one column per method and scope."""
    points = data["points"]
    columns = list(dict.fromkeys((p["method"], p["scope"]) for p in points))
    budgets = sorted({p["n_reference"] for p in points})
    header = ["references"] + [f"{method} ({scope})" for method, scope in columns]
    lines = ["| " + " | ".join(header) + " |", "|---:|" + "---:|" * len(columns)]
    for n in budgets:
        cells = [f"{n:,}"]
        for method, scope in columns:
            found = [
                p["perplexity"]
                for p in points
                if (p["method"], p["scope"], p["n_reference"]) == (method, scope, n)
            ]
            cells.append(f"{found[0]:,.2f}" if found else "–")
        lines.append("| " + " | ".join(cells) + " |")
    before = data.get("perplexity_before")
    note = f"\n\nUnpruned perplexity {before:.2f}. " if before is not None else "\n\n"
    return "\n".join(lines) + note + _command(data)


def compression_paired(data: Mapping[str, Any]) -> str:
    """Perplexity per compression method on one evaluation split, each against Wanda in the same
    scope on the same texts (and each LRP method against its plain-gradient twin, when present):
    paired bootstrap interval of the perplexity ratio (texts resampled) and the sign test on
    per-text mean NLL."""
    rows, settings = data["rows"], data["settings"]
    found = {(r["method"], r["scope"]): r for r in rows}
    lines = ["| method | scope | perplexity | vs Wanda [95% CI] | texts lower / higher NLL | p (sign test) |",
             "|---|---|---:|---:|---:|---:|"]  # fmt: skip
    twins = []
    for row in rows:
        wanda = found.get(("wanda", row["scope"]))
        cells = _paired(wanda, row) if wanda is not None and row is not wanda else ["–", "–", "–"]
        cells = [row["method"], row["scope"], f"{row['perplexity']:.2f}", *cells]
        lines.append("| " + " | ".join(cells) + " |")
        plain = "gradient" + row["method"][3:] if row["method"].startswith("lrp-") else None
        twin = found.get((plain, row["scope"]))
        if twin is not None:
            change, counts, p = _paired(twin, row)
            twins.append(f"{row['method']} against {plain} (the same score from plain gradients), "
                         f"{row['scope']}: {change}, texts lower / higher {counts}, p = {p}.")  # fmt: skip
    note = (
        f"\n\n{settings['n_eval']} {settings.get('eval_split', 'dev')} passages (unpruned perplexity "
        f"{data['perplexity_before']:.2f}), {settings['n_reference']:,} reference passages, LRP methods "
        f"explaining `{settings.get('objective', 'next_token')}`. "
    )
    extends = data.get("extends")
    earlier = f"Rows before the last run's: `{extends['command']}`. " if extends else ""
    return "\n".join(lines) + note + "".join(t + " " for t in twins) + earlier + _command(data)


def _paired(base: Mapping[str, Any], row: Mapping[str, Any]) -> list[str]:
    """Change of perplexity from ``base`` to ``row`` [95% CI], texts with lower / higher NLL, p."""
    change = bootstrap_change(base["text_nlls"], row["text_nlls"], base_weights=base["text_tokens"],
                              other_weights=row["text_tokens"], exp=True)  # fmt: skip
    ours, theirs = _mean_nlls(row), _mean_nlls(base)
    lower = sum(1 for a, b in zip(ours, theirs, strict=True) if a < b)
    higher = sum(1 for a, b in zip(ours, theirs, strict=True) if a > b)
    return [change.cell(1), f"{lower} / {higher}", f"{mcnemar(theirs, ours):.3g}"]


def _mean_nlls(row: Mapping[str, Any]) -> list[float]:
    return [n / t if t else math.nan for n, t in zip(row["text_nlls"], row["text_tokens"], strict=True)]


def adapter_cost(data: Mapping[str, Any]) -> str:
    """Adapter bytes against the target and generation speed with the adapter active, per size and batch."""
    rows = data["rows"]
    batches = sorted({r["batch"] for r in rows})
    header = ["pruned neurons", "adapter bytes", "target (8/unit + 4 KB)"]
    header += [f"tokens/s ratio, batch {b}" for b in batches] + ["load overhead"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
    for neurons in sorted({r["neurons"] for r in rows}):
        mine = {r["batch"]: r for r in rows if r["neurons"] == neurons}
        first = next(iter(mine.values()))
        cells = [f"{neurons:,}", f"{first['bytes']:,}", f"{first['limit']:,}"]
        cells += [f"{mine[b]['ratio']:.3f}" if b in mine else "–" for b in batches]
        cells.append(f"+{first['load_extra_s']:.3f} s")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n" + _command(data)


def adapter_overhead(data: Mapping[str, Any]) -> str:
    """Forward time of the unmerged and merged adapter against the base model, per level."""
    settings = data.get("settings", {})
    lines = ["| level | pruned units | base ms per forward | unmerged / base | merged / base |",
             "|---|---:|---:|---:|---:|"]  # fmt: skip
    lines += [
        f"| {r['level']} | {r['pruned']:,} | {r['base_ms']:.1f} | {r['unmerged']:.3f} | {r['merged']:.3f} |"
        for r in data["rows"]
    ]
    shape = f"batch {settings.get('batch', '?')} × {settings.get('tokens', '?')} tokens"
    return "\n".join(lines) + f"\n\n{shape}, median of {settings.get('repeats', '?')}. " + _command(data)


VIEWS = {
    "adapter_overhead": adapter_overhead,
    "attribution_cost": attribution_cost,
    "scale": scale,
    "compression_curve": compression_curve,
    "compression_paired": compression_paired,
    "adapter_cost": adapter_cost,
}
