"""Behaviour correction with equal-size controls: the paper's experiment as one function.

``run_correction`` builds the undesired reference set from the model's own behaviour (e.g.
greedy continuations that score as toxic / repetitive; each behaviour of
:data:`hf_sparc.behaviors.BEHAVIORS` says how), attributes it and general text, selects the same
number of components with LRP and with each control (Gradient×Input, activation, magnitude,
random over several seeds), and measures the behaviour and perplexity on held-out data for
every selection. Same count, same level, same evaluation data for all: a win of LRP over the
controls cannot be mere capacity loss.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

from hf_sparc.behaviors import BehaviorSet, get_behavior
from hf_sparc.masks import Masks
from hf_sparc.reports.writer import new_figure, write_report
from hf_sparc.workflows._experiment import (
    CONTROLS,
    CorrectionSettings,
    default_controls,
    held_out_note,
    mean_and_sd,
    prepare_experiment,
)

__all__ = [
    "CONTROLS",
    "CorrectionResult",
    "CorrectionSettings",
    "correction_figure",
    "default_controls",
    "mean_and_sd",
    "run_correction",
]


@dataclass
class CorrectionResult:
    """What :func:`run_correction` measured.

    ``rows`` maps a selection name (``"base"``, ``"lrp"``, ``"random"``, ...) to its metrics;
    random is the mean over seeds with ``*_sd`` standard deviations. ``masks`` holds the selection
    of the main method, ``references`` what the undesired reference set was made of.
    """

    settings: CorrectionSettings
    rows: dict[str, dict[str, float]]
    masks: Masks
    references: dict[str, Any]
    metric: str
    reference_pairs: BehaviorSet | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "settings": asdict(self.settings),
            "metric": self.metric,
            "rows": self.rows,
            "references": self.references,
            "pruned": self.masks.total(),
            "of": self.masks.size(),
        }

    def table(self) -> str:
        """Markdown table: behaviour metric and perplexity per selection, change vs base."""
        base = self.rows["base"]
        lines = [
            f"| selection | {self.metric} | Δ vs base | perplexity | Δ vs base |",
            "|---|---:|---:|---:|---:|",
        ]
        for name, row in self.rows.items():
            cells = [name]
            for key in (self.metric, "perplexity"):  # "pruned" is the same for all: checked in tests
                value, sd = row[key], row.get(f"{key}_sd")
                cells.append(f"{value:.4f}" + (f" ± {sd:.4f}" if sd is not None else ""))
                cells.append("" if name == "base" else f"{(value - base[key]) / base[key]:+.1%}")
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def markdown(self, title: str, notes: Sequence[str] = ()) -> str:
        """A report: the table, what the references were, the settings, then ``notes`` paragraphs."""
        settings = ", ".join(f"{key}={value!r}" for key, value in asdict(self.settings).items())
        return (
            "\n\n".join(
                [
                    f"# {title}",
                    self.table(),
                    held_out_note(self.settings),
                    f"References: {json.dumps(self.references)}",
                    f"Settings: {settings}",
                    *notes,
                ]
            )
            + "\n"
        )

    def save(
        self,
        folder: str | os.PathLike,
        title: str,
        notes: Sequence[str] = (),
        extra: dict[str, Any] | None = None,
    ) -> None:
        """``report.md``, ``plot.png`` and, last (it marks a complete run), ``report.json``.

        ``extra``: more entries for ``report.json`` (e.g. timing, model name).
        """
        write_report(
            folder,
            markdown=self.markdown(title, notes),
            data={**self.to_dict(), **(extra or {})},
            files={"plot.png": correction_figure(self)},
        )


def run_correction(
    model: nn.Module, tokenizer, settings: CorrectionSettings | None = None, *, scorer=None
) -> CorrectionResult:
    """Run the correction experiment on built-in data; see the module docstring.

    Returns the metrics of the unpruned model, of the main method's selection and of every
    control, all at ``settings.count`` components of ``settings.level``. ``scorer``: toxicity
    scorer (see :func:`hf_sparc.metrics.toxicity_scorer`; default ``alt-profanity-check``), for
    behaviours scored by a classifier only.
    """
    experiment = prepare_experiment(model, tokenizer, settings, scorer=scorer)
    s = experiment.settings
    (main,) = experiment.fit(s.method, s.count)
    with experiment.counting(2 + sum(experiment.n_fits(control) for control in s.controls)):
        rows = {"base": experiment.measure(None), s.method: experiment.measure(main.masks)}
        for control in s.controls:
            measured = [experiment.measure(pruner.masks) for pruner in experiment.fit(control, s.count)]
            rows[control] = _mean_rows(measured) if control == "random" else measured[0]
    return CorrectionResult(
        s,
        rows,
        main.masks,
        experiment.reference_summary(),
        experiment.behavior.metric.name,
        experiment.references,
    )


def _mean_rows(rows: list[dict[str, float]]) -> dict[str, float]:
    mean, sd = mean_and_sd(rows)
    return {**mean, **{f"{key}_sd": value for key, value in sd.items()}}


def correction_figure(result: CorrectionResult):
    """Bar chart of the behaviour metric and perplexity per selection (random: mean ± sd), as a
    :class:`matplotlib.figure.Figure` (see :func:`hf_sparc.reports.writer.new_figure`)."""
    behavior = get_behavior(result.settings.behavior)
    names = list(result.rows)
    figure, axes = new_figure(10, 3.8, ncols=2)
    for ax, key in zip(axes, (result.metric, "perplexity"), strict=True):
        values = [result.rows[n][key] for n in names]
        errors = [result.rows[n].get(f"{key}_sd", 0.0) for n in names]
        colors = [
            "#888888" if n == "base" else "#d62728" if n == result.settings.method else "#1f77b4"
            for n in names
        ]
        ax.bar(names, values, yerr=errors, color=colors, capsize=3)
        ax.axhline(result.rows["base"][key], color="#444444", linestyle="--", linewidth=1)
        ax.set_title(f"{key} ({behavior.metric_named(key).direction})")
        ax.tick_params(axis="x", rotation=30)
        if not all(math.isfinite(v) for v in values):
            ax.set_yscale("symlog")
    s = result.settings
    figure.suptitle(f"{s.behavior}: {s.count} {s.level}s pruned per selection (same count for every control)")
    return figure
