"""Repetitive generation: the response uniqueness ratio (RUR) of greedy continuations."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from hf_sparc.metrics._common import PromptsLike
from hf_sparc.metrics.generation import generate_continuations


def response_uniqueness_ratio(token_ids: Sequence[int] | torch.Tensor) -> float:
    """Unique tokens over generated tokens (paper Eq. 11): 1.0 means no token repeats.

    ``[a, a, a, b]`` gives 2 / 4 = 0.5. An empty response has no defined ratio and gives
    ``nan``, which every threshold comparison treats as "not repetitive". A 1-D tensor works
    too (converted to ints first, since tensor elements hash by identity).
    """
    ids = token_ids.tolist() if isinstance(token_ids, torch.Tensor) else list(token_ids)
    if not ids:
        return math.nan
    return len(set(ids)) / len(ids)


def _mean_ignoring_nan(values: Sequence[float]) -> float:
    """Mean of the values that are not ``nan`` (``nan`` if there are none)."""
    finite = [value for value in values if not math.isnan(value)]
    return sum(finite) / len(finite) if finite else math.nan


def repetition(
    model: nn.Module,
    tokenizer,
    prompts: PromptsLike,
    *,
    max_new_tokens: int = 32,
    batch_size: int = 8,
    progress: bool = True,
) -> dict[str, Any]:
    """Mean RUR of the model's greedy continuations of ``prompts`` (lower = more repetitive).

    Continuations come from :func:`generate_continuations`, so the RUR counts generated tokens
    only: never the prompt, and never EOS or padding (a continuation ends before its first EOS or
    pad token). A continuation that is empty (the model ends at once) has no RUR; it is left out
    of the mean and counted in ``"n_empty"``.

    Returns:
        ``{"mean_rur": float, "rur": list[float] (nan for empty continuations), "n_empty": int,
        "continuations": list[str]}``, per-sample lists in prompt order.
    """
    generations = generate_continuations(
        model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size, progress=progress
    )
    scores = [response_uniqueness_ratio(item["continuation_ids"]) for item in generations]
    return {
        "mean_rur": _mean_ignoring_nan(scores),
        "rur": scores,
        "n_empty": sum(math.isnan(score) for score in scores),
        "continuations": [item["continuation"] for item in generations],
    }
