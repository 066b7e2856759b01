"""Texts → tokenized samples → right-padded batches with explained-token masks.

Accepted inputs (everywhere hf_sparc takes reference texts):

* ``list[str]``: plain text; every next-token prediction is explained.
* dicts with ``"prompt"`` and ``"continuation"``: only predictions of continuation tokens are
  explained (the paper's setting: explain the model's own undesired continuation). A pair longer
  than ``max_length`` loses prompt tokens from the left (a leading BOS stays), so that the
  explained continuation is kept.
* dicts with a text column (``text_column``, default ``"text"``).
* dicts with ``"input_ids"`` (already tokenized; no tokenizer needed).
* a ``datasets.Dataset`` (rows are dicts, as above).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch

TextsLike = Iterable[str] | Iterable[Mapping[str, Any]] | Any


@dataclass(frozen=True)
class Sample:
    """One tokenized reference text.

    ``explain_from`` is the index of the first token whose *prediction* is explained: 1 for
    plain text, the prompt length for prompt/continuation pairs.
    """

    input_ids: tuple[int, ...]
    explain_from: int

    @property
    def n_explained(self) -> int:
        # An empty text has no first token to predict from (never a negative count).
        return max(0, len(self.input_ids) - max(self.explain_from, 1))


@dataclass(frozen=True)
class Batch:
    """Right-padded tensors for one batch of samples.

    ``explained[b, t]`` is true when the logit of token ``t + 1`` at position ``t`` is explained;
    ``targets[b, t]`` holds that token id (0 elsewhere).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    explained: torch.Tensor
    targets: torch.Tensor
    first_index: int

    def to(self, device: torch.device) -> Batch:
        return Batch(
            *(t.to(device) for t in (self.input_ids, self.attention_mask, self.explained, self.targets)),
            self.first_index,
        )


def _encode(tokenizer, text: str, special: bool) -> list[int]:
    if tokenizer is None:
        raise ValueError("A tokenizer is needed to attribute texts; pass tokenizer=...")
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def _fitted(ids: list[int], explain_from: int, max_length: int, bos_id: int | None) -> tuple[list[int], int]:
    """``ids`` cut to ``max_length``: prompt tokens go first, from the left, then explained ones from
    the right. One prompt token always stays (the first explained prediction is made there), and so
    does a leading BOS when there is room. Plain text (``explain_from=1``) is thus simply cut from
    the right."""
    prompt, explained = ids[:explain_from], ids[explain_from:]
    room = max(max_length - len(explained), 1)
    if len(prompt) > room:
        keep_first = room >= 2 and bos_id is not None and prompt[0] == bos_id
        prompt = prompt[:1] + prompt[len(prompt) - room + 1 :] if keep_first else prompt[len(prompt) - room :]
    return (prompt + explained)[:max_length], len(prompt)


def _rows(texts: TextsLike, text_column: str) -> Iterator[str | Mapping[str, Any]]:
    column_names = getattr(texts, "column_names", None)
    if column_names is not None and text_column not in column_names and "prompt" not in column_names:
        raise ValueError(
            f"The dataset has no {text_column!r} column (columns: {column_names}); pass text_column=..."
        )
    if isinstance(texts, str | bytes):
        raise TypeError("texts must be a collection of texts, not a single string; wrap it in a list.")
    yield from texts


def tokenize(
    texts: TextsLike, tokenizer, *, max_length: int, text_column: str = "text", require_explained: bool = True
) -> list[Sample]:
    """Tokenize reference texts into samples of at most ``max_length`` tokens (with a warning).

    Texts are cut from the right; prompt/continuation pairs lose prompt tokens from the left
    first, so the continuation that is explained survives. Samples with nothing to explain (an
    empty continuation, a text of at most one token) are dropped with a warning when
    ``require_explained``; an input with no usable sample raises ``ValueError``.
    """
    if max_length < 2:
        raise ValueError(f"max_length must be at least 2 tokens, got {max_length}.")
    samples: list[Sample] = []
    truncated = dropped = total = 0
    bos_id = getattr(tokenizer, "bos_token_id", None)
    for row in _rows(texts, text_column):
        total += 1
        if isinstance(row, str):
            ids, explain_from = _encode(tokenizer, row, True), 1
        elif isinstance(row, Mapping) and "prompt" in row and "continuation" in row:
            prompt = _encode(tokenizer, row["prompt"], True)
            ids, explain_from = prompt + _encode(tokenizer, row["continuation"], False), len(prompt)
        elif isinstance(row, Mapping) and text_column in row:
            ids, explain_from = _encode(tokenizer, row[text_column], True), 1
        elif isinstance(row, Mapping) and "input_ids" in row:
            ids, explain_from = [int(i) for i in row["input_ids"]], 1
        else:
            raise TypeError(
                f"Reference item {total - 1} is a {type(row).__name__}; expected a string or a dict with "
                f"{text_column!r}, with 'prompt' and 'continuation', or with 'input_ids'."
            )
        if len(ids) > max_length:
            truncated += 1
            ids, explain_from = _fitted(ids, explain_from, max_length, bos_id)
        sample = Sample(tuple(ids), explain_from)
        if require_explained and sample.n_explained <= 0:
            dropped += 1
            continue
        samples.append(sample)
    if total == 0:
        raise ValueError("No reference texts were given (texts is empty).")
    if truncated:
        warnings.warn(
            f"{truncated} of {total} reference texts were longer than max_length={max_length} tokens "
            "and were truncated (prompt/continuation pairs lose prompt tokens from the left).",
            stacklevel=3,
        )
    if dropped:
        warnings.warn(
            f"{dropped} of {total} reference texts had no token to explain (an empty continuation, "
            "or a text of at most one token) and were skipped.",
            stacklevel=3,
        )
    if not samples:
        raise ValueError(f"None of the {total} reference texts has a token to explain.")
    return samples


def batches(samples: list[Sample], batch_size: int, pad_token_id: int = 0) -> Iterator[Batch]:
    """Right-padded batches in input order (right padding keeps positions of real tokens)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}.")
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        width = max(len(s.input_ids) for s in chunk)
        input_ids = torch.full((len(chunk), width), pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(chunk), width), dtype=torch.long)
        explained = torch.zeros((len(chunk), width), dtype=torch.bool)
        targets = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, sample in enumerate(chunk):
            length = len(sample.input_ids)
            ids = torch.tensor(sample.input_ids, dtype=torch.long)
            input_ids[row, :length] = ids
            attention_mask[row, :length] = 1
            first = max(sample.explain_from, 1) - 1
            explained[row, first : length - 1] = True
            targets[row, : length - 1] = ids[1:]
        yield Batch(input_ids, attention_mask, explained, targets, start)
