"""Two-choice task metrics (e.g. IOI, items from :mod:`hf_sparc.data.tasks`): logit difference
of the correct over the wrong answer at the last prompt position, and accuracy."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from hf_sparc.architectures import unwrap_model
from hf_sparc.data.tasks import answer_tokens
from hf_sparc.metrics._common import eval_mode, model_device, pad_batch, progress_bar

__all__ = ["logit_differences", "task_scores"]


def logit_differences(
    model: nn.Module,
    tokenizer,
    items: Sequence[Mapping[str, Any]],
    *,
    batch_size: int = 16,
    progress: bool = True,
) -> torch.Tensor:
    """Per item: logit of the first ``correct`` token minus that of the first ``wrong`` token,
    at the last prompt position (fp32, ``[len(items)]``)."""
    prompts, correct, wrong = answer_tokens(tokenizer, items)
    device = model_device(model)
    # the backbone (adapters included) for all positions, the output layer only at the last one:
    # full-vocabulary logits at every position would cost as much as a few decoder layers
    causal_lm = unwrap_model(model)
    head = causal_lm.get_output_embeddings()
    out = []
    with (
        eval_mode(model),
        torch.inference_mode(),
        progress_bar(len(prompts), "hf_sparc task", progress) as bar,
    ):
        for start in range(0, len(prompts), batch_size):
            # right padding: real positions are unchanged; the pad id is never attended to
            input_ids, attention_mask = pad_batch(prompts[start : start + batch_size], 0, "right", device)
            hidden = causal_lm.base_model(
                input_ids=input_ids, attention_mask=attention_mask, use_cache=False
            ).last_hidden_state
            last = head(
                hidden[torch.arange(len(input_ids), device=device), attention_mask.sum(1) - 1]
            ).float()
            pick = torch.tensor(
                [correct[start : start + batch_size], wrong[start : start + batch_size]], device=device
            )
            out.append((last.gather(1, pick[0][:, None]) - last.gather(1, pick[1][:, None])).squeeze(1).cpu())
            bar.update(len(input_ids))
    return torch.cat(out)


def task_scores(
    model: nn.Module,
    tokenizer,
    items: Sequence[Mapping[str, Any]],
    *,
    batch_size: int = 16,
    progress: bool = True,
) -> dict[str, float]:
    """``{"logit_diff": mean logit difference, "accuracy": share of items with a positive one, "n"}``."""
    diffs = logit_differences(model, tokenizer, items, batch_size=batch_size, progress=progress)
    return {"logit_diff": float(diffs.mean()), "accuracy": float((diffs > 0).float().mean()), "n": len(diffs)}
