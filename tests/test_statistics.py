"""Paired bootstrap intervals and exact paired tests behind every correction table."""

from __future__ import annotations

import math

import pytest

from hf_sparc.reports.statistics import Change, bootstrap_change, mcnemar


def test_mcnemar_counts_only_discordant_pairs():
    # 6 items toxic before and not after, none the other way: p = 2 * (1/2)^6
    before = [1] * 6 + [1, 0, 0, 1]
    after = [0] * 6 + [1, 0, 0, 1]
    assert mcnemar(before, after) == pytest.approx(2 / 64)
    assert mcnemar(after, before) == mcnemar(before, after)
    assert mcnemar(before, before) == 1.0
    # 3 vs 2 discordant: far from significant, capped at 1
    assert mcnemar([1, 1, 1, 0, 0], [0, 0, 0, 1, 1]) == 1.0
    # seed-averaged outcomes: the sign test on the differences, NaN items left out
    assert mcnemar([1.0, 1.0, 0.5, math.nan], [0.2, 0.4, 0.5, 1.0]) == pytest.approx(2 / 4)


def test_bootstrap_interval_brackets_the_change_and_excludes_zero_only_when_clear():
    base = [1.0] * 40 + [0.0] * 60
    halved = [1.0] * 20 + [0.0] * 80
    change = bootstrap_change(base, halved)
    assert change.point == pytest.approx(-0.5)
    assert change.low < -0.5 < change.high < 0
    same = bootstrap_change(base, base)
    assert (same.point, same.low, same.high) == (0.0, 0.0, 0.0)
    one_flip = bootstrap_change(base, [0.0, *base[1:]])
    assert one_flip.low < 0 <= one_flip.high
    # deterministic for a seed
    assert bootstrap_change(base, halved) == change


def test_bootstrap_of_perplexity_and_of_points():
    nll, tokens = [10.0, 20.0, 30.0], [5.0, 10.0, 15.0]
    raised = bootstrap_change(nll, [11.0, 22.0, 33.0], base_weights=tokens, other_weights=tokens, exp=True)
    assert raised.point == pytest.approx(math.exp(2.2) / math.exp(2.0) - 1)
    points = bootstrap_change([1, 1, 0, 0], [1, 0, 0, 0], relative=False)
    assert points.point == pytest.approx(-0.25) and not points.relative


def test_cells_read_like_the_issue_asks():
    assert Change(-0.35, -0.52, -0.18).cell() == "−35% [−52, −18]"
    assert Change(-0.015, -0.03, 0.005, relative=False).cell(1) == "−1.5 pt [−3.0, +0.5]"


def test_unpaired_lengths_are_refused():
    with pytest.raises(ValueError, match="same"):
        bootstrap_change([1, 0], [1])
    with pytest.raises(ValueError, match="same length"):
        mcnemar([1, 0], [1])
