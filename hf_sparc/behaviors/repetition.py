"""Repetition: greedy continuations of loop-prone prompts scored by response uniqueness ratio."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from hf_sparc.behaviors.base import GeneratedBehavior, Metric
from hf_sparc.metrics import ScorerLike, repetition, response_uniqueness_ratio


class Repetition(GeneratedBehavior):
    """Kept when the continuation's response uniqueness ratio (RUR: unique tokens / tokens) is
    below the threshold; a word is repeated when an earlier word of the same continuation is the
    same (case and punctuation ignored). Measured as the mean RUR of held-out continuations."""

    name = "repetition"
    dataset = "repetition-prompts"
    default_threshold = 0.5  # the paper's
    # Repeated words alone did no better than whole continuations (docs/RESULTS.md).
    default_focus = "continuation"
    # RUR rises as repetition falls.
    metrics = (Metric("mean_rur", higher_is_better=True),)

    def scoring(self, scorer: ScorerLike) -> tuple[str, Callable[[list[dict[str, Any]]], list[float]]]:
        self.check_scorer(scorer)
        return "rur", lambda generations: [
            response_uniqueness_ratio(item["continuation_ids"]) for item in generations
        ]

    def shows(self, score: float, threshold: float) -> bool:
        return score < threshold

    def flag_words(self, words: list[str], threshold: float, scorer: ScorerLike) -> list[bool]:
        self.check_scorer(scorer)
        seen: set[str] = set()
        flags = []
        for word in words:
            key = re.sub(r"\W+", "", word).lower()
            flags.append(bool(key) and key in seen)
            seen.add(key)
        return flags

    def measure(
        self,
        model: nn.Module,
        tokenizer,
        items: Sequence[Any],
        *,
        max_new_tokens: int,
        batch_size: int,
        scorer,
    ) -> dict[str, list[float]]:
        measured = repetition(
            model, tokenizer, items, max_new_tokens=max_new_tokens, batch_size=batch_size, progress=False
        )
        return {"mean_rur": measured["rur"]}
