"""What is explained: the per-text output whose relevance :func:`hf_sparc.attribute` computes.

* ``next_token``: the logits of the actually-following tokens (teacher forcing), continuation
  tokens only for prompt/continuation pairs.
* ``next_token_centered``: the same positions, each token's logit minus the mean logit over the
  vocabulary (what raises that token against the others; softmax ignores a shift of all logits).
* ``next_token_logprob``: the same positions, each following token's log-probability (the
  log-softmax of the full-vocabulary logits): what perplexity measures, so what compression keeps.
* ``last_token_max``: the top logit at the last position.
* ``logit_difference``: for two-choice task items ``{"prompt", "correct", "wrong"}``
  (:mod:`hf_sparc.data.tasks`), the logit of the first ``correct`` token minus that of the first
  ``wrong`` token at the last prompt position. The backward pass is linear in the explained
  output, so this is the relevance for the correct answer minus that for the wrong one, in one pass.

A new objective is one :class:`Objective` subclass and one line in :data:`OBJECTIVES`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from hf_sparc.attribution.offload import parameter
from hf_sparc.data.batching import Batch, TextsLike
from hf_sparc.data.tasks import answer_tokens

__all__ = ["OBJECTIVES", "Objective", "get_objective"]


class Objective(ABC):
    """One way to turn a batch's last hidden states into one explained output per text.

    A fresh instance serves one run: :meth:`prepare` may keep per-text data for :meth:`explained_output`.
    """

    name: ClassVar[str]
    per_token: ClassVar[bool] = False
    """Explains the following token at every explained position (teacher forcing)."""

    def prepare(self, texts: TextsLike, tokenizer) -> TextsLike:
        """The texts to tokenize for this objective (default: ``texts`` as given)."""
        return texts

    def run_data(self) -> Any:
        """What :meth:`prepare` kept that decides the result beyond the tokenized texts (part of a
        checkpoint's fingerprint); ``None`` when nothing."""
        return None

    @abstractmethod
    def explained_output(self, model: nn.Module, hidden: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Per-text explained output ``[batch]`` from the last hidden states ``[batch, seq, d]``."""


class NextToken(Objective):
    """Σ over explained positions of the following token's logit, without full-vocabulary logits."""

    name = "next_token"
    per_token = True

    def _vectors(self, weight: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return weight[ids].float()

    def _biases(self, bias: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return bias[ids].float()

    def _per_position(
        self, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, ids: torch.Tensor
    ) -> torch.Tensor:
        """The explained output at each explained position (``hidden``: their hidden states)."""
        logits = (hidden.float() * self._vectors(weight, ids).to(hidden.device)).sum(-1)
        if bias is not None:
            logits = logits + self._biases(bias, ids).to(hidden.device)
        return logits

    def explained_output(self, model: nn.Module, hidden: torch.Tensor, batch: Batch) -> torch.Tensor:
        head = model.get_output_embeddings()
        rows = batch.explained.nonzero(as_tuple=True)
        weight, bias = parameter(head, "weight"), parameter(head, "bias")
        ids = batch.targets[rows].to(weight.device)
        outputs = self._per_position(hidden[rows], weight, bias, ids)
        return torch.zeros(hidden.shape[0], device=hidden.device).index_add(0, rows[0], outputs)


class NextTokenCentered(NextToken):
    """Each following token's logit minus the mean logit: what raises this token against the
    others, not what raises every logit at once (softmax ignores a common shift)."""

    name = "next_token_centered"

    def _vectors(self, weight: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return weight[ids].float() - weight.float().mean(0)

    def _biases(self, bias: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return bias[ids].float() - bias.float().mean()


class NextTokenLogProb(NextToken):
    """Σ over explained positions of the following token's log-probability.

    The logit objectives explain what raises a token's score; perplexity also pays for what raises
    the other tokens' scores, which the log-softmax's gradient (one-hot minus the predicted
    distribution) brings in. Costs the full-vocabulary logits of the explained positions.
    """

    name = "next_token_logprob"

    def _per_position(
        self, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, ids: torch.Tensor
    ) -> torch.Tensor:
        bias = None if bias is None else bias.float().to(hidden.device)
        logits = nn.functional.linear(hidden.float(), weight.float().to(hidden.device), bias)
        return logits.log_softmax(-1).gather(1, ids.to(hidden.device)[:, None]).squeeze(1)


class LastTokenMax(Objective):
    """The top logit at the last real position."""

    name = "last_token_max"

    def explained_output(self, model: nn.Module, hidden: torch.Tensor, batch: Batch) -> torch.Tensor:
        last = batch.attention_mask.sum(1) - 1
        logits = model.get_output_embeddings()(
            hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        )
        return logits.float().max(-1).values


class LogitDifference(Objective):
    """``logit(correct) − logit(wrong)`` (first tokens) at the last prompt position.

    Items are tokenized as prompt/continuation pairs with ``correct`` as the continuation, so
    prompts are truncated from the left like any pair and the correct token is the first
    explained target; the wrong tokens are kept here, by text index.
    """

    name = "logit_difference"

    def __init__(self) -> None:
        self.wrong: list[int] = []

    def prepare(self, texts: TextsLike, tokenizer) -> TextsLike:
        items = list(texts) if not isinstance(texts, str | bytes) else texts
        _, _, self.wrong = answer_tokens(tokenizer, items)
        return [{"prompt": item["prompt"], "continuation": item["correct"]} for item in items]

    def run_data(self) -> Any:
        return self.wrong

    def explained_output(self, model: nn.Module, hidden: torch.Tensor, batch: Batch) -> torch.Tensor:
        head = model.get_output_embeddings()
        weight, bias = parameter(head, "weight"), parameter(head, "bias")
        rows = torch.arange(hidden.shape[0], device=batch.explained.device)
        # the first explained position is the last prompt token, where the answer is predicted
        position = batch.explained.int().argmax(1)
        correct = batch.targets[rows, position].to(weight.device)
        first = batch.first_index
        wrong = torch.tensor(self.wrong[first : first + len(rows)], device=weight.device)
        vectors = (weight[correct].float() - weight[wrong].float()).to(hidden.device)
        logits = (hidden[rows.to(hidden.device), position.to(hidden.device)].float() * vectors).sum(-1)
        if bias is not None:
            logits = logits + (bias[correct].float() - bias[wrong].float()).to(hidden.device)
        return logits


OBJECTIVES: Mapping[str, type[Objective]] = {
    objective.name: objective
    for objective in (NextToken, NextTokenCentered, NextTokenLogProb, LastTokenMax, LogitDifference)
}


def get_objective(name: str) -> Objective:
    """A fresh instance of the objective ``name``; the error lists the valid names."""
    if name not in OBJECTIVES:
        raise ValueError(f"Unknown objective {name!r}; expected one of {list(OBJECTIVES)}.")
    return OBJECTIVES[name]()
