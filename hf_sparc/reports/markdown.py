"""Human-readable run reports (``report.md``) from the JSON report of a run."""

from __future__ import annotations

from typing import Any


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


def render_markdown(report: dict[str, Any]) -> str:
    """Markdown for a report dict as written by ``hf-sparc correct`` / ``select``."""
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
