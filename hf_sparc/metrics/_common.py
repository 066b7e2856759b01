"""Helpers shared by the metric functions: prompt normalisation, eval mode, progress bars, and
:class:`NamedScorer` (shared by the toxicity scorers)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers.utils import logging as hf_logging

PromptsLike = Iterable[str] | Iterable[Mapping[str, Any]]
"""Prompts as strings or as dicts with a ``"prompt"`` key (e.g. ``builtin_dataset("toxic-prompts")``)."""


@dataclass(frozen=True)
class NamedScorer:
    """A scorer with a name for reports; calling it checks that it gives one float per text."""

    name: str
    score: Callable[[list[str]], Sequence[float]]

    def __call__(self, texts: list[str]) -> list[float]:
        if not texts:
            return []
        scores = [float(value) for value in self.score(list(texts))]
        if len(scores) != len(texts):
            raise ValueError(f"Scorer {self.name!r} returned {len(scores)} scores for {len(texts)} texts.")
        return scores


def prompt_texts(prompts: PromptsLike) -> list[str]:
    """The prompt strings of ``prompts`` (strings, or dicts with ``"prompt"``), in order."""
    if isinstance(prompts, str | bytes):
        raise TypeError("prompts must be a collection of prompts, not a single string; wrap it in a list.")
    texts = []
    for index, item in enumerate(prompts):
        if isinstance(item, str):
            texts.append(item)
        elif isinstance(item, Mapping) and isinstance(item.get("prompt"), str):
            texts.append(item["prompt"])
        else:
            raise TypeError(
                f"Prompt {index} is a {type(item).__name__}; expected a string or a dict with 'prompt'."
            )
    if not texts:
        raise ValueError("No prompts were given.")
    return texts


def model_device(model: nn.Module) -> torch.device:
    """Where inputs go: ``model.device`` for transformers/PEFT models, else the first parameter's."""
    device = getattr(model, "device", None)
    return device if isinstance(device, torch.device) else next(model.parameters()).device


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode (no dropout) for the block, then every module's own mode back.

    Restoring per module matters: a model in the middle of training may have frozen parts
    deliberately kept in eval mode.
    """
    modes = [(module, module.training) for module in model.modules()]
    try:
        model.eval()
        yield
    finally:
        for module, training in modes:
            module.training = training


def progress_bar(total: int, desc: str, enabled: bool, unit: str = "text") -> tqdm:
    """A tqdm bar, silenced by ``enabled=False`` or transformers' progress-bar setting."""
    return tqdm(
        total=total, desc=desc, unit=unit, disable=not (enabled and hf_logging.is_progress_bar_enabled())
    )


def pad_batch(
    sequences: list[list[int]], pad_id: int, side: str, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """``input_ids`` and ``attention_mask`` of ``sequences`` padded on ``side`` (``"left"``/``"right"``)."""
    width = max(len(ids) for ids in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, ids in enumerate(sequences):
        columns = slice(width - len(ids), width) if side == "left" else slice(0, len(ids))
        input_ids[row, columns] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, columns] = 1
    return input_ids.to(device), attention_mask.to(device)
