"""The report of ``hf-sparc compress``: methods side by side at one sparsity."""

from __future__ import annotations

from typing import Any


def compression_markdown(report: dict[str, Any]) -> str:
    """``report.md`` of a compression run, from its JSON report (one row per method × scope)."""
    lines = [
        f"# hf_sparc compression: {report['model']}",
        "",
        f"{report['sparsity']:.0%} of the decoder-layer projection weights pruned "
        f"(scope `{report['scope']}`), "
        f"reference `{report['reference']}` ({report['n_reference']} texts), evaluation "
        f"`{report['evaluation']}` ({report['n_evaluation']} texts, {report['max_length']} tokens max).",
        "",
        f"Unpruned perplexity: **{report['perplexity_before']:.4g}**. The adapter in this folder is "
        f"`{report['method']}`.",
        "",
        "| method | scope | pruned | of | perplexity | change |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for row in report["rows"]:
        change = row["perplexity"] / report["perplexity_before"] - 1
        lines.append(
            f"| {row['method']} | {row['scope']} | {row['pruned']} | {row['total']} | "
            f"{row['perplexity']:.4g} | {change:+.1%} |"
        )
    return "\n".join(lines) + "\n"
