"""Continuations of prompts (greedy, or sampled): the model's own behaviour that the metrics score."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from hf_sparc.metrics._common import (
    PromptsLike,
    eval_mode,
    model_device,
    pad_batch,
    progress_bar,
    prompt_texts,
)


@dataclass(frozen=True)
class Sampling:
    """Sampled instead of greedy continuations: ``n`` per prompt, nucleus sampling (``top_p``) at
    ``temperature`` (RealToxicityPrompts' protocol samples with top_p 0.9). The draws come from
    a generator seeded with ``seed`` inside the call (the process's random state is restored
    afterwards), so a call is reproducible for the same prompts and ``batch_size``."""

    n: int = 4
    temperature: float = 1.0
    top_p: float = 0.9
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n < 1 or self.temperature <= 0 or not 0 < self.top_p <= 1:
            raise ValueError(f"Sampling needs n >= 1, temperature > 0 and 0 < top_p <= 1; got {self}.")

    def generate_kwargs(self) -> dict[str, Any]:
        """``model.generate`` arguments (top-k off: nucleus sampling alone)."""
        return {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p, "top_k": 0,
                "num_return_sequences": self.n}  # fmt: skip


def _ids(value: Any) -> set[int]:
    """Token ids from an ``eos_token_id``-style setting (``None``, an int or a list)."""
    if value is None:
        return set()
    return {int(value)} if isinstance(value, int) else {int(v) for v in value}


def _pad_token_id(tokenizer) -> int:
    """The tokenizer's pad id, falling back to EOS as transformers does for open-ended generation."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    raise ValueError("The tokenizer has neither a pad nor an EOS token; set tokenizer.pad_token.")


def _first_stop(ids: list[int], stop_ids: set[int]) -> list[int]:
    """``ids`` up to (not including) the first stop token."""
    for position, token in enumerate(ids):
        if token in stop_ids:
            return ids[:position]
    return ids


def generate_continuations(
    model: nn.Module,
    tokenizer,
    prompts: PromptsLike,
    *,
    max_new_tokens: int = 32,
    batch_size: int = 8,
    progress: bool = True,
    sampling: Sampling | None = None,
) -> list[dict[str, Any]]:
    """Greedy (or, with ``sampling``, sampled) continuations of ``prompts``, in input order.

    Prompts are encoded as raw text with the tokenizer's special tokens (a BOS where it adds one;
    no chat template) and generated in left-padded batches, longest prompts first so that a
    batch wastes little compute on padding. The model's ``generation_config`` applies (e.g. its
    EOS ids or a repetition penalty) except the decoding: greedy (one beam) unless ``sampling``
    is given, so the result is deterministic and, up to floating-point ties, independent of
    ``batch_size``. The tokenizer is not modified: padding uses its pad token, or EOS.

    Args:
        model: A causal LM (``*ForCausalLM``) or a ``PeftModel`` around one (adapters apply).
            Its train/eval modes are restored afterwards.
        tokenizer: The model's tokenizer.
        prompts: Strings, or dicts with ``"prompt"`` (other keys are ignored).
        max_new_tokens: Tokens generated per prompt, at most.
        batch_size: Prompts per ``generate`` call.
        progress: Show a tqdm bar (also silenced by transformers' progress-bar setting).
        sampling: ``sampling.n`` sampled continuations per prompt instead of one greedy one.

    Returns:
        One dict per prompt (``sampling``: ``sampling.n`` in a row): ``"prompt"``,
        ``"continuation_ids"`` (the generated ids, cut before the first EOS or pad token, so
        neither is ever included) and ``"continuation"`` (those ids decoded without special tokens).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}.")
    texts = prompt_texts(prompts)
    encoded = [list(tokenizer(text)["input_ids"]) for text in texts]
    empty = [index for index, ids in enumerate(encoded) if not ids]
    if empty:
        raise ValueError(f"Prompts {empty[:5]} encode to no tokens; generation needs at least one.")
    pad_id = _pad_token_id(tokenizer)
    generation_config = getattr(model, "generation_config", None)
    stop_ids = (
        {pad_id} | _ids(tokenizer.eos_token_id) | _ids(getattr(generation_config, "eos_token_id", None))
    )
    device = model_device(model)
    order = sorted(range(len(texts)), key=lambda index: -len(encoded[index]))
    n = sampling.n if sampling else 1
    decoding = sampling.generate_kwargs() if sampling else {"do_sample": False}
    results: list[dict[str, Any]] = [{} for _ in range(len(texts) * n)]
    with (
        eval_mode(model),
        torch.inference_mode(),
        torch.random.fork_rng(devices=range(torch.cuda.device_count()), enabled=sampling is not None),
        progress_bar(len(texts), "hf_sparc generate", progress) as bar,
    ):
        if sampling:
            torch.manual_seed(sampling.seed)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            input_ids, attention_mask = pad_batch([encoded[i] for i in chunk], pad_id, "left", device)
            output = model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                max_new_tokens=max_new_tokens,
                num_beams=1,
                pad_token_id=pad_id,
                **decoding,
            )
            slots = (index * n + sample for index in chunk for sample in range(n))
            for slot, new_ids in zip(slots, output[:, input_ids.shape[1] :].tolist(), strict=True):
                ids = _first_stop(new_ids, stop_ids)
                results[slot] = {
                    "prompt": texts[slot // n],
                    "continuation": tokenizer.decode(ids, skip_special_tokens=True),
                    "continuation_ids": ids,
                }
            bar.update(len(chunk))
    return results
