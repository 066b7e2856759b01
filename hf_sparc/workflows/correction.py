"""Behaviour correction with like-for-like controls: the paper's experiment as one function.

``run_correction`` builds the undesired reference set from the model's own behaviour (e.g.
greedy continuations that score as toxic / repetitive; each behaviour of
:data:`hf_sparc.behaviors.BEHAVIORS` says how), attributes it and general text, and selects the
same number of components with LRP and with each control (Gradient×Input, Wanda, activation,
magnitude, random over several seeds). Every control chooses among the same candidates as LRP —
the units its ``protect_general`` rule leaves — ranked by its own score; one more random row
draws from all units and says so. Every selection is measured on the same held-out items
(behaviour under each scorer, perplexity, zero-shot accuracy), per item, so that each change
gets a bootstrap interval and a paired test (:mod:`hf_sparc.reports.correction`).
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
from hf_sparc.reports.correction import correction_tables
from hf_sparc.reports.render import provenance
from hf_sparc.reports.statistics import mean_and_sd
from hf_sparc.reports.writer import new_figure, write_report
from hf_sparc.workflows._experiment import (
    AURA,
    AURA_RULES,
    AURA_TOP_K,
    CONTROLS,
    CorrectionSettings,
    Measurement,
    default_controls,
    held_out_note,
    prepare_experiment,
)

__all__ = [
    "AURA",
    "AURA_TOP_K",
    "CONTROLS",
    "UNPROTECTED_RANDOM",
    "CorrectionResult",
    "CorrectionSettings",
    "Measurement",
    "correction_figure",
    "default_controls",
    "mean_and_sd",
    "run_correction",
]


UNPROTECTED_RANDOM = "random (unprotected)"
"""Row name of the random control that draws from every unit, ignoring the candidate pool."""


@dataclass
class CorrectionResult:
    """What :func:`run_correction` measured.

    ``rows`` maps a selection name (``"base"``, ``"lrp"``, ``"random"``, ...) to its metrics;
    random is the mean over seeds with ``*_sd`` standard deviations. ``measurements`` holds the
    per-item outcomes behind every row (one entry per seed), ``rules`` which candidates each
    row chose from, ``selections`` its masks (one per seed). ``masks`` holds the selection of
    the main method, ``references`` what the undesired reference set was made of.
    """

    settings: CorrectionSettings
    rows: dict[str, dict[str, float]]
    masks: Masks
    references: dict[str, Any]
    metric: str
    reference_pairs: BehaviorSet | None = field(default=None, repr=False)
    measurements: dict[str, list[Measurement]] = field(default_factory=dict, repr=False)
    rules: dict[str, str] = field(default_factory=dict)
    selections: dict[str, list[Masks]] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The JSON record: settings, rows, rules and every per-item outcome (what
        :func:`hf_sparc.reports.correction.correction_tables` renders)."""
        behavior = get_behavior(self.settings.behavior)
        return {
            "settings": asdict(self.settings),
            "metric": self.metric,
            "table_metrics": list(behavior.table_metrics),
            "rows": self.rows,
            "rules": self.rules,
            "references": self.references,
            "pruned": self.masks.total(),
            "of": self.masks.size(),
            "outcomes": {name: [m.outcomes for m in runs] for name, runs in self.measurements.items()},
        }

    def table(self) -> str:
        """Markdown tables with 95% intervals and paired tests (see
        :func:`hf_sparc.reports.correction.correction_tables`)."""
        return correction_tables(self.to_dict())

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
            data={**self.to_dict(), **provenance(), **(extra or {})},
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
    aura = experiment.fit_aura(s.count) if (s.aura and s.level == "neuron") or s.method == AURA else {}
    rules = {"base": "", **AURA_RULES}
    selections: dict[str, list[Masks]] = {name: [masks] for name, masks in aura.items()}
    if s.method == AURA:
        if AURA not in aura:
            raise ValueError("AurA needs references with and without the behaviour; none were found.")
        main_masks, pool = selections.pop(AURA)[0], None
    else:
        (main,) = experiment.fit(s.method, s.count)
        main_masks, pool = main.masks, main.candidate_pool()
        share = f"{s.protect_general:g}" if s.protect_general else "none"
        rules[s.method] = f"own (protect {share} of |{s.method} R_general|)"
        if s.dampen is not None:
            main_masks = main_masks.dampened(s.dampen)
            rules[s.method] += f", dampened to {s.dampen:g}"
    for control in s.controls:
        # every control picks among the main method's candidates, ranked by its own score
        pruners = experiment.fit(control, s.count, protect_general=0.0)
        selections[control] = [pruner.select(count=s.count, pool=pool) for pruner in pruners]
        rules[control] = f"{s.method}'s candidates"
    if "random" in s.controls:
        selections[UNPROTECTED_RANDOM] = [pruner.masks for pruner in experiment.fit("random", s.count)]
        rules[UNPROTECTED_RANDOM] = "all units (unprotected)"
    with experiment.counting(2 + sum(len(masks) for masks in selections.values())):
        measurements = {"base": [experiment.measure(None)], s.method: [experiment.measure(main_masks)]}
        for name, masks in selections.items():
            measurements[name] = [experiment.measure(m) for m in masks]
    rows = {name: _mean_rows([m.values for m in runs]) for name, runs in measurements.items()}
    rules = {name: rule for name, rule in rules.items() if name in rows}
    return CorrectionResult(
        s,
        rows,
        main_masks,
        experiment.reference_summary(),
        experiment.behavior.metric.name,
        experiment.references,
        measurements,
        rules,
        {s.method: [main_masks], **selections},
    )


def _mean_rows(rows: list[dict[str, float]]) -> dict[str, float]:
    """One run: its values; several seeds: their means and ``*_sd`` standard deviations."""
    if len(rows) == 1:
        return dict(rows[0])
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
