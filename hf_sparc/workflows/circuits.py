"""Circuit discovery: keep the components most relevant for a task, prune the rest progressively.

A *task* is a list of dicts ``{"prompt", "correct", "wrong"}`` (:mod:`hf_sparc.data.tasks`, which
also generates the built-in IOI task): the model should rank the first token of ``correct`` above
the first token of ``wrong`` right after ``prompt``.

Pipeline (:func:`discover_circuit`):

1. :func:`task_relevance`: relevance of every unit for the logit difference ``correct − wrong``
   at the last prompt position. Gradient-based methods (``lrp``, ``cp-lrp``, ``gradient``) explain
   it directly, in one :func:`hf_sparc.attribute` pass with ``objective="logit_difference"``;
   forward-only methods (``activation``, ``wanda``) score the prompts; ``magnitude``/``random``
   need no data. Units are ranked by ``|R|``: a unit that systematically hurts the task matters
   to the circuit as much as one that helps it.
2. Prune the least relevant units globally, in growing amounts (nested sets), and measure
   :func:`hf_sparc.metrics.task.task_scores` (mean logit difference, accuracy) on the evaluation
   items: the performance–sparsity curve. Between the last passing and the first failing amount
   the count is bisected ``refine`` times.
3. The circuit is the smallest kept set whose accuracy is at least ``threshold`` × the unpruned
   accuracy; its :class:`~hf_sparc.Masks` prune everything outside it and ship as a SPARC adapter.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn
from tqdm.auto import tqdm
from transformers.utils import logging as hf_logging

from hf_sparc.attribution import attribute, get_method
from hf_sparc.masks import Masks
from hf_sparc.metrics.task import task_scores
from hf_sparc.relevance import Relevance
from hf_sparc.reports.writer import new_figure
from hf_sparc.selection import select
from hf_sparc.tuner.model import apply_masks

__all__ = [
    "DEFAULT_FRACTIONS",
    "CircuitResult",
    "CurvePoint",
    "curve_figure",
    "discover_circuit",
    "task_relevance",
]

DEFAULT_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99)
"""Shares of the scored units pruned along the curve (before bisection refines it)."""


def task_relevance(
    model: nn.Module,
    tokenizer,
    items: Sequence[Mapping[str, Any]],
    *,
    method: str = "lrp",
    level: str = "neuron",
    target_modules: str | Sequence[str] | None = None,
    batch_size: int = 8,
    max_length: int = 128,
    seed: int = 0,
    progress: bool = True,
) -> Relevance:
    """``|R|`` of every unit for the task's logit difference (see the module docstring).

    Gradient-based methods explain ``logit(correct) − logit(wrong)`` at the last prompt position
    (objective ``"logit_difference"``); ``activation`` and ``wanda`` score the prompts;
    ``magnitude`` and ``random`` use no data.
    """
    common = dict(
        tokenizer=tokenizer,
        method=method,
        level=level,
        target_modules=target_modules,
        batch_size=batch_size,
        max_length=max_length,
        seed=seed,
        progress=progress,
    )
    if get_method(method, level).needs_gradient:
        return abs(attribute(model, items, objective="logit_difference", **common))
    return abs(attribute(model, [item["prompt"] for item in items], **common))


@dataclass(frozen=True)
class CurvePoint:
    """Task performance with the ``pruned`` least relevant units removed."""

    pruned: int
    accuracy: float
    logit_diff: float


@dataclass(frozen=True)
class CircuitResult:
    """A performance–sparsity curve and the circuit read from it.

    Attributes:
        method, level: How units were scored, and which units.
        total: Units in scope.
        threshold: Required share of the unpruned accuracy.
        points: The curve, by growing ``pruned``; ``points[0]`` is the unpruned model.
        circuit: The point with the most units pruned whose accuracy passes the threshold.
        masks: Prune everything outside the circuit (``None`` when the circuit is the whole model).
    """

    method: str
    level: str
    total: int
    threshold: float
    points: tuple[CurvePoint, ...]
    circuit: CurvePoint
    masks: Masks | None = field(default=None, repr=False, compare=False)

    @property
    def baseline(self) -> CurvePoint:
        return self.points[0]

    @property
    def kept(self) -> int:
        """Units in the circuit."""
        return self.total - self.circuit.pruned

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "level": self.level,
            "total": self.total,
            "threshold": self.threshold,
            "kept": self.kept,
            "kept_fraction": self.kept / self.total,
            "circuit": asdict(self.circuit),
            "baseline": asdict(self.baseline),
            "points": [asdict(p) for p in self.points],
        }


class _Curve:
    """Task performance at growing pruned counts of the least relevant units, measured on demand.

    Only the masks of the best passing point are kept: weight-level masks can be large.
    """

    def __init__(self, model, tokenizer, evaluation, relevance: Relevance, threshold: float, batch_size: int):
        self.model, self.tokenizer, self.evaluation = model, tokenizer, evaluation
        self.relevance, self.threshold, self.batch_size = relevance, threshold, batch_size
        self.best_pruned, self.best_masks = 0, None
        self.points: dict[int, CurvePoint] = {}
        self.baseline = self.measure(0)

    def passes(self, point: CurvePoint) -> bool:
        return point.accuracy >= self.threshold * self.baseline.accuracy - 1e-9

    def _scores(self, model: nn.Module, pruned: int) -> CurvePoint:
        scores = task_scores(
            model, self.tokenizer, self.evaluation, batch_size=self.batch_size, progress=False
        )
        return CurvePoint(pruned, scores["accuracy"], scores["logit_diff"])

    def measure(self, pruned: int) -> CurvePoint:
        if not pruned:
            point = self.points[0] = self._scores(self.model, 0)
            return point
        # select() breaks ties deterministically, so larger counts prune supersets (nested curve)
        chosen = select(self.relevance, count=pruned, keep="highest", scope="global")
        candidate = apply_masks(self.model, chosen, adapter_name="circuit")
        try:
            point = self.points[pruned] = self._scores(candidate, pruned)
        finally:
            candidate.unload()
        if self.passes(point) and pruned > self.best_pruned:
            self.best_pruned, self.best_masks = pruned, chosen
        return point

    def refine(self, steps: int, bar: tqdm) -> None:
        """Bisect between the last passing and the first failing count measured so far."""
        passing = max(c for c, p in self.points.items() if self.passes(p))
        failing = min((c for c, p in self.points.items() if c > passing and not self.passes(p)), default=None)
        for _ in range(steps):
            if failing is None or failing - passing < 2:
                break
            middle = (passing + failing) // 2
            passing, failing = (middle, failing) if self.passes(self.measure(middle)) else (passing, middle)
            bar.update(1)


def _check_curve_options(threshold: float, fractions: Sequence[float], refine: int) -> None:
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}.")
    if any(not 0 < f < 1 for f in fractions) or not fractions:
        raise ValueError(f"fractions must be in (0, 1), got {list(fractions)}.")
    if refine < 0:
        raise ValueError(f"refine must be >= 0, got {refine}.")


def discover_circuit(
    model: nn.Module,
    tokenizer,
    reference: Sequence[Mapping[str, Any]],
    evaluation: Sequence[Mapping[str, Any]],
    *,
    method: str = "lrp",
    level: str = "neuron",
    threshold: float = 0.9,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    refine: int = 4,
    relevance: Relevance | None = None,
    target_modules: str | Sequence[str] | None = None,
    batch_size: int = 8,
    max_length: int = 128,
    seed: int = 0,
    progress: bool = True,
) -> CircuitResult:
    """Rank units by task relevance, prune the least relevant progressively, read off the circuit.

    Args:
        model: A supported causal LM; it is left unmodified (each step is a temporary adapter).
        tokenizer: Its tokenizer.
        reference: Task items scored by :func:`task_relevance`.
        evaluation: Task items the curve is measured on.
        method, level, target_modules: As in :func:`hf_sparc.attribute`.
        threshold: The circuit keeps at least ``threshold`` × the unpruned accuracy.
        fractions: Shares of units pruned along the curve, each in ``(0, 1)``.
        refine: Bisection steps between the last passing and the next failing amount.
        relevance: Precomputed task relevance (skips step 1).
        batch_size, max_length, seed, progress: As in :func:`hf_sparc.attribute`.
    """
    _check_curve_options(threshold, fractions, refine)
    if relevance is None:
        relevance = task_relevance(
            model, tokenizer, reference, method=method, level=level, target_modules=target_modules,
            batch_size=batch_size, max_length=max_length, seed=seed, progress=progress,
        )  # fmt: skip
    total = relevance.numel()
    counts = sorted({c for f in fractions if 0 < (c := math.floor(f * total)) < total})
    curve = _Curve(model, tokenizer, evaluation, relevance, threshold, batch_size)
    bar = tqdm(
        total=len(counts) + refine,
        desc=f"hf_sparc circuit ({method}, {level})",
        unit="step",
        disable=not (progress and hf_logging.is_progress_bar_enabled()),
    )
    with bar:
        for count in counts:
            curve.measure(count)
            bar.update(1)
        curve.refine(refine, bar)
    return CircuitResult(
        method=method,
        level=relevance.level,
        total=total,
        threshold=threshold,
        points=tuple(curve.points[c] for c in sorted(curve.points)),
        circuit=curve.points[curve.best_pruned],
        masks=curve.best_masks,
    )


def curve_figure(results: Sequence[CircuitResult]):
    """Accuracy and logit difference against the share of pruned units, one line per result, the
    circuit marked with a star: a :class:`matplotlib.figure.Figure` to write with
    :func:`hf_sparc.reports.writer.write_files`."""
    figure, axes = new_figure(10, 3.8, ncols=2)
    for ax, key in zip(axes, ("accuracy", "logit_diff"), strict=True):
        for result in results:
            xs = [p.pruned / result.total for p in result.points]
            (line,) = ax.plot(xs, [getattr(p, key) for p in result.points], marker=".", label=result.method)
            ax.plot(
                result.circuit.pruned / result.total,
                getattr(result.circuit, key),
                "*",
                ms=12,
                color=line.get_color(),
            )
        ax.set_xlabel(f"share of {results[0].level}s pruned")
        ax.set_title(key.replace("_", " "))
        if key == "accuracy":
            ax.axhline(results[0].threshold * results[0].baseline.accuracy, color="#888888", ls="--", lw=1)
    axes[0].legend(fontsize="small")
    figure.suptitle("Task performance while pruning the least relevant units (★ = circuit)")
    return figure
