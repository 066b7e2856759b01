"""How much to cut: a grid of counts, the behaviour/perplexity trade-off, and an automatic pick.

:func:`run_sweep` builds the references once and attributes once per method, then only
re-selects for every count of the grid, so a sweep costs one attribution plus one evaluation per
point. The pick is the strongest correction whose perplexity stays within a budget of the
unpruned model's (default +2%), the trade-off the paper asks of a correction.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from torch import nn

from hf_sparc.behaviors import BehaviorSet, get_behavior
from hf_sparc.masks import Masks
from hf_sparc.reports.statistics import mean_and_sd
from hf_sparc.reports.writer import new_figure, write_report
from hf_sparc.workflows._experiment import CorrectionSettings, held_out_note, prepare_experiment


@dataclass
class SweepPoint:
    """Metrics of one selection: ``method`` at ``count`` (random: mean over seeds, ``sd`` per metric)."""

    method: str
    count: int
    metrics: dict[str, float]
    sd: dict[str, float] | None = None


@dataclass
class SweepResult:
    """What :func:`run_sweep` measured.

    Attributes:
        settings: The run's settings (``count`` unused: the grid is ``counts``).
        metric: The behaviour's headline metric (e.g. ``toxic_rate`` or ``mean_rur``).
        base: Metrics of the unpruned model.
        points: Every measured selection, in method then count order.
        budget: Allowed relative perplexity increase of the pick.
        pick: The strongest point of the main method within the budget (``None``: none was).
        pick_masks: Its masks (what ``hf-sparc sweep`` saves as the adapter).
        references: What the undesired reference set was made of.
        reference_pairs: The undesired references themselves (prompt/continuation pairs).
    """

    settings: CorrectionSettings
    metric: str
    base: dict[str, float]
    points: list[SweepPoint]
    budget: float
    pick: SweepPoint | None
    pick_masks: Masks | None
    references: dict[str, Any]
    reference_pairs: BehaviorSet | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "settings": asdict(self.settings),
            "metric": self.metric,
            "base": self.base,
            "budget": self.budget,
            "points": [asdict(point) for point in self.points],
            "pick": asdict(self.pick) if self.pick else None,
            "references": self.references,
        }

    def table(self) -> str:
        """Markdown: every point with its change against the unpruned model; the pick marked."""
        lines = [
            f"| method | count | {self.metric} | Δ vs base | perplexity | Δ vs base | within budget |",
            "|---|---:|---:|---:|---:|---:|:---:|",
            f"| base | 0 | {self.base[self.metric]:.4f} | | {self.base['perplexity']:.4f} | | |",
        ]
        for point in self.points:
            cells = [f"**{point.method}** (pick)" if point is self.pick else point.method, str(point.count)]
            for key in (self.metric, "perplexity"):
                sd = (point.sd or {}).get(key)
                cells.append(f"{point.metrics[key]:.4f}" + (f" ± {sd:.4f}" if sd is not None else ""))
                cells.append(f"{_change(point.metrics[key], self.base[key]):+.1%}")
            cells.append("yes" if self._within_budget(point) else "no")
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def markdown(self, title: str, notes: Sequence[str] = ()) -> str:
        """A report: the pick (or why none), the table, the references, the plot, then ``notes``."""
        if self.pick is None:
            verdict = (
                f"No count of `{self.settings.method}` kept perplexity within +{self.budget:.1%}; "
                "nothing was picked. Try smaller counts or a larger budget."
            )
        else:
            verdict = (
                f"Pick: `{self.pick.method}` at {self.pick.count} {self.settings.level}s — "
                f"{self.metric} {_change(self.pick.metrics[self.metric], self.base[self.metric]):+.1%}, "
                f"perplexity {_change(self.pick.metrics['perplexity'], self.base['perplexity']):+.1%} "
                f"(budget +{self.budget:.1%})."
            )
        return (
            "\n\n".join(
                [
                    f"# {title}",
                    verdict,
                    self.table(),
                    held_out_note(self.settings),
                    f"References: {json.dumps(self.references)}",
                    "![](pareto.png)",
                    *notes,
                ]
            )
            + "\n"
        )

    def save(self, folder: str | os.PathLike, title: str, notes: Sequence[str] = ()) -> None:
        """``report.md``, ``pareto.png`` and, last (it marks a complete run), ``report.json``."""
        write_report(
            folder,
            markdown=self.markdown(title, notes),
            data=self.to_dict(),
            files={"pareto.png": pareto_figure(self)},
        )

    def _within_budget(self, point: SweepPoint) -> bool:
        return point.metrics["perplexity"] <= self.base["perplexity"] * (1.0 + self.budget)


def _change(value: float, base: float) -> float:
    return (value - base) / base if base else math.nan


def run_sweep(
    model: nn.Module,
    tokenizer,
    settings: CorrectionSettings | None = None,
    counts: Sequence[int] = (35, 69, 138, 276, 552),
    *,
    budget: float = 0.02,
    scorer=None,
) -> SweepResult:
    """Measure ``settings.method`` (and ``settings.controls``) at every count of ``counts``.

    ``settings.controls`` defaults to none here (``None`` → ``()``): every control multiplies the
    cost by the number of counts (random by ``random_seeds`` more). The pick is the main
    method's point with the best behaviour metric among those whose perplexity is at most
    ``(1 + budget)`` times the unpruned model's; ties go to the smaller count.
    """
    if not counts or any(int(c) < 1 for c in counts):
        raise ValueError(f"counts must be positive integers, got {list(counts)}.")
    if budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}.")
    s = settings or CorrectionSettings()
    if s.method == "aura":
        raise ValueError("A sweep varies the count; AurA picks its own: use hf-sparc correct --method aura.")
    if s.controls is None:
        s = replace(s, controls=())
    experiment = prepare_experiment(model, tokenizer, s, scorer=scorer)
    metric = experiment.behavior.metric
    grid = sorted({int(c) for c in counts})
    methods = (s.method, *experiment.settings.controls)
    points: list[SweepPoint] = []
    pick_masks: dict[int, Masks] = {}
    with experiment.counting(1 + len(grid) * sum(experiment.n_fits(method) for method in methods)):
        base = experiment.measure(None).values
        for method in methods:
            pruners = experiment.fit(method, grid[0])
            for count in grid:
                masks = [pruner.select(count=count) for pruner in pruners]
                if method == s.method and s.dampen is not None:
                    masks = [m.dampened(s.dampen) for m in masks]
                measured = [experiment.measure(m).values for m in masks]
                if method == s.method:
                    pick_masks[count] = masks[0]
                if len(measured) == 1:
                    points.append(SweepPoint(method, count, measured[0]))
                else:
                    points.append(SweepPoint(method, count, *mean_and_sd(measured)))
    result = SweepResult(
        settings=experiment.settings,
        metric=metric.name,
        base=base,
        points=points,
        budget=budget,
        pick=None,
        pick_masks=None,
        references=experiment.reference_summary(),
        reference_pairs=experiment.references,
    )
    for point in points:
        if point.method != s.method or not result._within_budget(point):
            continue
        if result.pick is None or metric.better(point.metrics[metric.name], result.pick.metrics[metric.name]):
            result.pick = point
    if result.pick is not None:
        result.pick_masks = pick_masks[result.pick.count]
    return result


def pareto_figure(result: SweepResult):
    """Behaviour metric against perplexity, one line per method, the budget and the pick marked,
    as a :class:`matplotlib.figure.Figure` (see :func:`hf_sparc.reports.writer.new_figure`)."""
    from matplotlib import ticker

    figure, ax = new_figure(6.5, 4.5)
    base = result.base
    ax.scatter([base["perplexity"]], [base[result.metric]], color="#444444", zorder=3, label="unpruned")
    for method in dict.fromkeys(point.method for point in result.points):
        mine = [point for point in result.points if point.method == method]
        x = [point.metrics["perplexity"] for point in mine]
        y = [point.metrics[result.metric] for point in mine]
        color = "#d62728" if method == result.settings.method else None
        ax.plot(x, y, marker="o", color=color, label=method)
        for point, xi, yi in zip(mine, x, y, strict=True):
            ax.annotate(str(point.count), (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.axvline(base["perplexity"] * (1 + result.budget), color="#888888", linestyle="--", linewidth=1)
    ax.text(  # at the bottom: the points of small counts crowd the top left
        base["perplexity"] * (1 + result.budget),
        ax.get_ylim()[0],
        f" +{result.budget:.0%} perplexity",
        va="bottom",
        fontsize=8,
        color="#555555",
    )
    if result.pick is not None:
        ax.scatter(
            [result.pick.metrics["perplexity"]],
            [result.pick.metrics[result.metric]],
            s=160,
            facecolors="none",
            edgecolors="#d62728",
            linewidths=2,
            zorder=4,
            label=f"pick ({result.pick.count})",
        )
    perplexities = [base["perplexity"], *(point.metrics["perplexity"] for point in result.points)]
    # A log axis only where it is needed (a collapsed model next to +1% changes); its default
    # ticks on a narrow range are unreadable scientific labels.
    wide = max(perplexities) > 3 * min(perplexities)
    if wide:
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_xlabel("perplexity on held-out general text" + (" (log)" if wide else ""))
    direction = get_behavior(result.settings.behavior).metric_named(result.metric).direction
    ax.set_ylabel(f"{result.metric} ({direction})")
    s = result.settings
    ax.set_title(f"{s.behavior}: {s.level}s cut by count (labels)")
    ax.legend(fontsize=8)
    return figure
