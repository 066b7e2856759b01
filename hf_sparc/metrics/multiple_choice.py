"""lm-evaluation-harness's zero-shot multiple-choice protocol, computed directly.

The same requests lm-eval makes for an ``output_type: multiple_choice`` task — context =
description + rendered ``doc_to_text``, continuation = ``target_delimiter + choice`` with any
trailing white space of the context moved into it, both encoded as lm-eval's ``HFLM`` encodes
them (the whole string and the context without special tokens; the continuation is the
difference) — scored by the summed log-probability of the continuation tokens, with ``acc`` the
argmax and ``acc_norm`` the argmax per character of the choice. What it drops is lm-eval's
per-call overhead (task building, dataset caching: over a minute per model on 2 cores), which
matters when every selection of a correction run is evaluated; requests that feed the model the
same tokens share one forward pass, as lm-eval's one-token-continuation cache does.
``tests/test_capability.py`` checks that both give the same per-item outcomes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jinja2
import torch
from torch import nn

from hf_sparc.architectures import unwrap_model
from hf_sparc.metrics._common import eval_mode, model_device, pad_batch

__all__ = ["choice_loglikelihoods", "requests_of"]

_TEMPLATES = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


def requests_of(
    tokenizer, item: dict[str, Any], *, doc_to_text: str, doc_to_choice: str | Sequence[str],
    description: str = "", target_delimiter: str = " ",
) -> tuple[list[str], list[tuple[list[int], list[int]]]]:  # fmt: skip
    """The choices of ``item`` and one ``(context ids, continuation ids)`` request per choice."""
    context = description + _TEMPLATES.from_string(doc_to_text).render(**item)
    choices = list(item[doc_to_choice]) if isinstance(doc_to_choice, str) else list(doc_to_choice)
    requests = []
    for choice in choices:
        head, tail = context, target_delimiter + choice
        spaces = len(head) - len(head.rstrip())
        if spaces:
            head, tail = head[:-spaces], head[-spaces:] + tail
        whole = tokenizer(head + tail, add_special_tokens=False)["input_ids"]
        start = len(tokenizer(head, add_special_tokens=False)["input_ids"])
        requests.append((list(whole[:start]), list(whole[start:])))
    return choices, requests


def choice_loglikelihoods(
    model: nn.Module,
    requests: Sequence[tuple[list[int], list[int]]],
    *,
    batch_size: int = 32,
    max_length: int = 2048,
) -> list[float]:
    """Summed log-probability of each request's continuation after its context.

    The model reads ``(context + continuation)[:-1]`` (its last ``max_length`` tokens), as in
    lm-eval; requests with the same input share one forward pass; longest inputs first so that
    a batch holds similar lengths (right padding, which never reaches a real position).
    """
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, (context, continuation) in enumerate(requests):
        if not continuation:
            raise ValueError(f"Request {index} has an empty continuation.")
        groups.setdefault(tuple((context + continuation)[:-1][-max_length:]), []).append(index)
    inputs = sorted(groups, key=len, reverse=True)
    scores = [0.0] * len(requests)
    device = model_device(model)
    # the backbone (adapters included) on every position, the vocabulary-sized output layer only
    # where a continuation token is predicted: full logits would cost more than the backbone
    causal_lm = unwrap_model(model)
    head = causal_lm.get_output_embeddings()
    with eval_mode(model), torch.inference_mode():
        for start in range(0, len(inputs), batch_size):
            chunk = inputs[start : start + batch_size]
            input_ids, attention_mask = pad_batch([list(x) for x in chunk], 0, "right", device)
            hidden = causal_lm.base_model(
                input_ids=input_ids, attention_mask=attention_mask, use_cache=False
            ).last_hidden_state
            for row, key in enumerate(chunk):
                width = max(len(requests[index][1]) for index in groups[key])
                log_probs = torch.log_softmax(head(hidden[row, len(key) - width : len(key)]).float(), -1)
                for index in groups[key]:
                    continuation = torch.tensor(requests[index][1], device=device)
                    picked = log_probs[width - len(continuation) :].gather(-1, continuation[:, None])
                    scores[index] = float(picked.sum())
    return scores
