"""Perplexity and per-text log-likelihood of a causal LM on plain texts (teacher forcing)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from hf_sparc.metrics._common import eval_mode, model_device, pad_batch, progress_bar


def _within_budget(sequences: list[list[int]], max_tokens: int | None) -> list[list[int]]:
    """The leading ``sequences`` holding ``max_tokens`` predicted tokens, the last one cut to fit."""
    if max_tokens is None:
        return sequences
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be positive, got {max_tokens}.")
    kept, left = [], max_tokens
    for ids in sequences:
        if left == 0:
            break
        ids = ids[: left + 1]
        kept.append(ids)
        left -= len(ids) - 1
    return kept


def _teacher_forced(
    model: nn.Module, sequences: list[list[int]], batch_size: int, what: str, progress: bool
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``(input_ids, attention_mask, logits)`` of ``sequences``, ``batch_size`` at a time, in eval
    mode without gradients (the model's modes restored afterwards)."""
    device = model_device(model)
    with (
        eval_mode(model),
        torch.inference_mode(),
        progress_bar(len(sequences), f"hf_sparc {what}", progress) as bar,
    ):
        for start in range(0, len(sequences), batch_size):
            chunk = sequences[start : start + batch_size]
            # The pad id is arbitrary: right padding follows every real token (so causal attention
            # never reaches it) and padded positions are left out of every sum.
            input_ids, attention_mask = pad_batch(chunk, 0, "right", device)
            logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
            yield input_ids, attention_mask, logits
            bar.update(len(chunk))


def perplexity(
    model: nn.Module,
    tokenizer,
    texts: Iterable[str],
    *,
    max_length: int = 128,
    batch_size: int = 8,
    max_tokens: int | None = None,
    progress: bool = True,
) -> float:
    """Perplexity of ``model`` on ``texts``: exp of the mean next-token NLL over all predicted tokens.

    Every text is encoded on its own with the tokenizer's special tokens and truncated to its
    first ``max_length`` tokens; each token after the first is predicted from the ones before it
    (a text of n tokens contributes n - 1 predictions; one-token texts contribute none). The
    mean runs over tokens, not texts, so long texts weigh more. Batches are right-padded and
    padding never enters the sum, so the result does not depend on ``batch_size`` beyond
    floating-point rounding.

    Args:
        model: A causal LM (``*ForCausalLM``) or a ``PeftModel`` around one (adapters apply).
            Its train/eval modes are restored afterwards.
        tokenizer: The model's tokenizer.
        texts: Plain texts.
        max_length: Tokens kept per text (including special tokens).
        batch_size: Texts per forward pass.
        max_tokens: Fixed token budget: count only the first ``max_tokens`` predicted tokens,
            taking texts in the given order and cutting the text that crosses the budget, so
            models are compared on exactly the same tokens. ``None``: every text in full.
        progress: Show a tqdm bar (also silenced by transformers' progress-bar setting).

    Raises:
        ValueError: No text yields a predicted token.
    """
    nlls, counts = text_nlls(
        model, tokenizer, texts, max_length=max_length, batch_size=batch_size, max_tokens=max_tokens,
        progress=progress,
    )  # fmt: skip
    return math.exp(sum(nlls) / sum(counts))


def text_nlls(
    model: nn.Module,
    tokenizer,
    texts: Iterable[str],
    *,
    max_length: int = 128,
    batch_size: int = 8,
    max_tokens: int | None = None,
    progress: bool = True,
) -> tuple[list[float], list[int]]:
    """Per scored text, the summed next-token NLL and the number of predicted tokens: what
    :func:`perplexity` is ``exp(sum(nll) / sum(count))`` of, kept per text for paired statistics
    (:func:`hf_sparc.reports.statistics.bootstrap_change`). Arguments as for :func:`perplexity`;
    texts with fewer than two tokens are left out."""
    if isinstance(texts, str | bytes):
        raise TypeError("texts must be a collection of texts, not a single string; wrap it in a list.")
    if max_length < 2:
        raise ValueError(f"max_length must be at least 2 tokens, got {max_length}.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}.")
    encoded = [list(tokenizer(text)["input_ids"])[:max_length] for text in texts]
    sequences = _within_budget([ids for ids in encoded if len(ids) > 1], max_tokens)
    if not sequences:
        raise ValueError("None of the texts has two or more tokens, so there is nothing to predict.")
    nlls: list[float] = []
    counts: list[int] = []
    for input_ids, attention_mask, logits in _teacher_forced(
        model, sequences, batch_size, "perplexity", progress
    ):
        labels = input_ids[:, 1:].masked_fill(attention_mask[:, 1:] == 0, -100)
        nll = F.cross_entropy(
            logits[:, :-1].transpose(1, 2).float(), labels, ignore_index=-100, reduction="none"
        )
        nlls.extend(nll.sum(1).tolist())
        counts.extend((labels != -100).sum(1).tolist())
    return nlls, counts


def sequence_start(tokenizer) -> list[int]:
    """Token ids to put before a text so that its first token is predicted too.

    None when the tokenizer adds a token of its own (e.g. Llama's BOS); else its BOS token, or
    its EOS token where it has no BOS (the document separator of GPT-2-style vocabularies), as
    lm-evaluation-harness does for an empty context.
    """
    if tokenizer("")["input_ids"]:
        return []
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if start is None:
        raise ValueError("The tokenizer adds no special token and has neither a BOS nor an EOS token.")
    return [start]


def log_likelihoods(
    model: nn.Module,
    tokenizer,
    texts: Iterable[str],
    *,
    max_length: int = 128,
    batch_size: int = 8,
    progress: bool = True,
) -> list[float]:
    """Log-likelihood (natural log) of each text under ``model``: the sum over its tokens of the
    log-probability of that token given the ones before it.

    Every text is encoded on its own with the tokenizer's special tokens, after
    :func:`sequence_start` (so its first token is scored as well), and cut to its first
    ``max_length`` tokens. Padding never enters a sum, so results do not depend on
    ``batch_size`` beyond floating-point rounding. Compare texts of one tokenization length
    scale only (e.g. the two sentences of a CrowS-Pairs pair): longer texts have lower sums.
    """
    if isinstance(texts, str | bytes):
        raise TypeError("texts must be a collection of texts, not a single string; wrap it in a list.")
    if max_length < 2:
        raise ValueError(f"max_length must be at least 2 tokens, got {max_length}.")
    start = sequence_start(tokenizer)
    sequences = [(start + list(tokenizer(text)["input_ids"]))[:max_length] for text in texts]
    if any(len(ids) < 2 for ids in sequences):
        raise ValueError("Every text needs at least one token to score.")
    sums: list[float] = []
    for input_ids, attention_mask, logits in _teacher_forced(
        model, sequences, batch_size, "log-likelihood", progress
    ):
        log_probs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        chosen = log_probs.gather(-1, input_ids[:, 1:, None])[..., 0]
        sums.extend((chosen * attention_mask[:, 1:]).sum(dim=1).tolist())
    return sums
