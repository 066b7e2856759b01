"""The report of a pruning run (``hf-sparc correct`` with own references, ``hf-sparc select``):
its JSON (:func:`pruning_report`), its markdown and the run folder's report files."""

from __future__ import annotations

import os
from typing import Any

from hf_sparc.reports.writer import write_report


def pruning_report(
    pruner: Any,
    model_name: str,
    before: dict[str, float] | None,
    after: dict[str, float] | None,
    references: dict[str, Any],
) -> dict[str, Any]:
    """The report of a pruning run: config, references, what was cut and metrics before/after.

    ``pruner`` is a fitted ``SparcPruner`` (its ``config`` and ``masks`` are read); ``before`` and
    ``after`` are metrics of the model without and with the cut (``None``: not evaluated).
    """
    masks = pruner.masks
    summary = masks.summary()
    return {
        "model": model_name,
        "config": pruner.config.to_dict(),
        "references": references,
        "pruned": summary.pruned,
        "total": summary.total,
        "fraction": summary.fraction,
        "per_module": {row.module: row.pruned for row in summary.rows if row.pruned},
        "rule": masks.rule,
        "metrics_before": before,
        "metrics_after": after,
    }


def write_pruning_report(folder: str | os.PathLike, report: dict[str, Any]) -> None:
    """``report.md`` and, last, ``report.json`` of a pruning run into ``folder``."""
    write_report(folder, markdown=pruning_markdown(report), data=report)


def _metrics_table(before: dict[str, float] | None, after: dict[str, float] | None) -> list[str]:
    if not before and not after:
        return ["No evaluation set was given (pass `--eval SPEC` for before/after metrics)."]
    before, after = before or {}, after or {}
    lines = ["| metric | before | after | change |", "|---|---:|---:|---:|"]
    for name in dict.fromkeys([*before, *after]):
        b, a = before.get(name), after.get(name)
        change = f"{(a - b) / b:+.1%}" if a is not None and b not in (None, 0) else ""
        lines.append(
            f"| {name} | {'' if b is None else f'{b:.4g}'} | {'' if a is None else f'{a:.4g}'} | {change} |"
        )
    return lines


def pruning_markdown(report: dict[str, Any]) -> str:
    """``report.md`` of a pruning run, from its :func:`pruning_report`."""
    config = report["config"]
    lines = [
        f"# hf_sparc run: {report['model']}",
        "",
        f"Pruned **{report['pruned']}** of {report['total']} {config['level']}s "
        f"({report['fraction']:.3%}) with `{config['method']}` relevance; rule: `{report['rule']}`.",
        "",
        "## Reference data",
        "",
    ]
    for role, ref in report.get("references", {}).items():
        lines.append(f"- {role}: {ref}")
    lines += [
        "",
        "## Metrics",
        "",
        *_metrics_table(report.get("metrics_before"), report.get("metrics_after")),
    ]
    lines += ["", "## Pruned per module", "", "| module | pruned |", "|---|---:|"]
    lines += [f"| `{name}` | {count} |" for name, count in report["per_module"].items()]
    lines += ["", "## Configuration", "", "```json"]
    lines += [f"{key}: {value!r}" for key, value in config.items()]
    lines += ["```", ""]
    return "\n".join(lines)
