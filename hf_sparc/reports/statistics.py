"""Uncertainty of a comparison between two selections measured on the same held-out items.

Every correction row is measured on the same items as the base model, so comparisons are paired:
:func:`bootstrap_change` resamples items (the same resample for both sides) to get a 95%
percentile interval of the relative change of a mean (or of a ratio of sums, for perplexity),
and :func:`mcnemar` is the exact two-sided McNemar test on paired binary outcomes (e.g. toxic or
not, answered right or not). :func:`mean_and_sd` summarises a control run with several seeds.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = ["Change", "bootstrap_change", "mcnemar"]

N_RESAMPLES = 2000
"""Bootstrap resamples: the 2.5% and 97.5% quantiles move by well under a point beyond this."""


@dataclass(frozen=True)
class Change:
    """A change from base with its 95% bootstrap interval: relative (``other / base - 1``) or
    absolute (``other - base``), as fractions."""

    point: float
    low: float
    high: float
    relative: bool = True

    def cell(self, digits: int = 0) -> str:
        """``"−35% [−52, −18]"`` (relative) or ``"−1.5 pt [−3.0, +0.5]"`` (absolute, in points)."""
        if not math.isfinite(self.point):
            return "n/a"
        unit = "%" if self.relative else " pt"
        low, high = (f"{100 * v:+.{digits}f}".replace("-", "−") for v in (self.low, self.high))
        return f"{100 * self.point:+.{digits}f}{unit}".replace("-", "−") + f" [{low}, {high}]"


def bootstrap_change(
    base: Sequence[float],
    other: Sequence[float],
    *,
    base_weights: Sequence[float] | None = None,
    other_weights: Sequence[float] | None = None,
    exp: bool = False,
    relative: bool = True,
    seed: int = 0,
    n_resamples: int = N_RESAMPLES,
) -> Change:
    """Paired bootstrap of the relative change of a (weighted) mean from ``base`` to ``other``.

    ``base[i]`` and ``other[i]`` are outcomes of the same item (e.g. toxic 0/1 of one prompt);
    the statistic of a side is ``sum(x) / sum(w)`` (``w``: ones unless weights are given), and
    with ``exp=True`` its exponential — perplexity, from per-text NLL sums and token counts.
    ``relative=False``: the difference ``other - base`` instead (e.g. accuracy, in points).
    Items are resampled with replacement, the same items for both sides. NaN outcomes are left
    out of their side's mean.

    Raises:
        ValueError: Sides of different lengths, or no items.
    """
    x0, x1 = (torch.tensor(list(v), dtype=torch.float64) for v in (base, other))
    if x0.shape != x1.shape or x0.numel() == 0:
        raise ValueError(f"Paired outcomes need the same non-zero length, got {x0.numel()} and {x1.numel()}.")
    w0, w1 = (torch.ones_like(x0) if w is None else torch.tensor(list(w), dtype=torch.float64)
              for w in (base_weights, other_weights))  # fmt: skip
    # an undefined outcome (NaN, e.g. the RUR of an empty continuation) counts on neither side
    for x, w in ((x0, w0), (x1, w1)):
        w[~torch.isfinite(x)] = 0.0
        x[~torch.isfinite(x)] = 0.0

    def statistic(index: torch.Tensor | slice) -> tuple[torch.Tensor, torch.Tensor]:
        means = [x[index].sum(-1) / w[index].sum(-1) for x, w in ((x0, w0), (x1, w1))]
        return (means[0].exp(), means[1].exp()) if exp else (means[0], means[1])

    def change(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if not relative:
            return b - a
        return torch.where(a == 0, torch.where(b == 0, 0.0, math.inf), b / a - 1)

    point = float(change(*statistic(slice(None))))
    generator = torch.Generator().manual_seed(seed)
    index = torch.randint(x0.numel(), (n_resamples, x0.numel()), generator=generator)
    resampled = change(*statistic(index))
    low, high = torch.quantile(resampled, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return Change(point, low, high, relative)


def mcnemar(a: Sequence[float], b: Sequence[float]) -> float:
    """Exact two-sided paired test: McNemar's for binary outcomes, the sign test otherwise.

    Only items where the two sides differ count: with ``n_b`` items where ``b`` is higher and
    ``n_a`` where ``a`` is, ``p = min(1, 2 · P(X <= min(n_a, n_b)))`` for ``X ~ Binomial(n_a +
    n_b, 1/2)``; ``1.0`` when no item differs. For 0/1 outcomes (toxic or not, right or wrong)
    these are McNemar's discordant pairs; for outcomes averaged over random seeds it is the sign
    test on the per-item differences. NaN items are left out.
    """
    if len(a) != len(b):
        raise ValueError(f"Paired outcomes need the same length, got {len(a)} and {len(b)}.")
    pairs = [(x, y) for x, y in zip(a, b, strict=True) if math.isfinite(x) and math.isfinite(y)]
    n_a = sum(1 for x, y in pairs if x > y)
    n_b = sum(1 for x, y in pairs if y > x)
    n = n_a + n_b
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(n_a, n_b) + 1)) / 2**n
    return min(1.0, 2 * tail)


def mean_and_sd(rows: Sequence[dict[str, float]]) -> tuple[dict[str, float], dict[str, float]]:
    """Per metric, the mean and the sample standard deviation (0 for one row) over ``rows``
    (e.g. the random control's seeds)."""
    mean = {key: statistics.fmean(row[key] for row in rows) for key in rows[0]}
    sd = {key: statistics.stdev(row[key] for row in rows) if len(rows) > 1 else 0.0 for key in rows[0]}
    return mean, sd
