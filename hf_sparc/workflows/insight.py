"""What pruned units did: the reference contexts where each one fires most, and where the cut sits.

Stable public API (used by ``hf-sparc inspect`` and by the correction report; the records and
their presentation live in :mod:`hf_sparc.workflows.insight_listing` and are re-exported here):

* :func:`unit_contexts` ``(model, tokenizer, masks, texts, *, top_k=5, context_tokens=8,
  batch_size=8, max_length=128, skip_special=True, progress=True) -> list[UnitContexts]``:
  for every pruned neuron or head of a :class:`~hf_sparc.Masks`, the ``top_k`` token positions of
  ``texts`` where it activates most, each with the preceding ``context_tokens`` tokens.
* :func:`render_markdown` ``(units, masks=None) -> str`` and :func:`to_json`
  ``(units, masks=None) -> dict``: the same listing as markdown / JSON-serialisable data.
* :func:`plot_layers` ``(masks, path, title=None) -> None``: a per-layer bar chart (PNG) of how
  many units are cut in each decoder layer, stacked by module kind (:func:`layers_figure`: the
  same as a ``Figure``).
* :func:`save_unit_report` ``(model, tokenizer, masks, texts, folder, *, title=None, **options)
  -> tuple[list[UnitContexts], str]``: ``layers.png`` and ``units.json`` in ``folder``, and the
  markdown listing (what ``hf-sparc inspect`` writes); :func:`correction_notes` wraps it into the
  report paragraphs of ``hf-sparc correct``/``sweep`` and ``examples/demo.py``.

The masks of a SPARC adapter loaded in a ``PeftModel`` come from
:func:`hf_sparc.tuner.adapter_masks.adapter_masks`.

What "activates" means per level:

* ``neuron``: the unit's output value of the masked module (e.g. an MLP up-projection feature);
  positions are ranked by ``|value|``, the signed value is reported.
* ``head``: the L2 norm of the head's output, i.e. its slice of the input of the attention output
  projection (exactly what a head mask zeroes).

Both are read where the attribution collector reads them
(:func:`hf_sparc.attribution.sites.hook_unit_site`).

Weight-level masks have no per-unit activation; :func:`plot_layers` and the counts in
:func:`render_markdown` still apply to them.

If ``model`` is a ``PeftModel`` its adapters are disabled while activations are read, so the
listing shows what the pruned units did *before* they were cut.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from typing import Any

import torch
from torch import nn

from hf_sparc.architectures import get_architecture, unwrap_model
from hf_sparc.attribution.sites import hook_unit_site
from hf_sparc.data.batching import Batch, Sample, TextsLike, batches, tokenize
from hf_sparc.masks import Masks
from hf_sparc.metrics._common import eval_mode, progress_bar
from hf_sparc.reports.writer import write_files
from hf_sparc.workflows.insight_listing import (
    Context,
    UnitContexts,
    layer_of,
    layers_figure,
    plot_layers,
    render_markdown,
    to_json,
)

__all__ = [
    "Context",
    "UnitContexts",
    "correction_notes",
    "layer_of",
    "layers_figure",
    "plot_layers",
    "render_markdown",
    "save_unit_report",
    "to_json",
    "unit_contexts",
]


@contextmanager
def _adapters_off(model: nn.Module) -> Iterator[None]:
    disable = getattr(model, "disable_adapter", None)
    with disable() if callable(disable) and hasattr(model, "peft_config") else nullcontext():
        yield


class _TopK:
    """Running top-k (by ``|value|``) over the token stream for the pruned units of one module."""

    def __init__(self, n_units: int, k: int) -> None:
        self.k = k
        self.magnitudes = torch.empty(0, n_units)
        self.values = torch.empty(0, n_units)
        self.tokens = torch.empty(0, n_units, dtype=torch.long)
        self.abs_sum = torch.zeros(n_units, dtype=torch.float64)
        self.count = 0

    def add(self, values: torch.Tensor, token_ids: torch.Tensor) -> None:
        """``values``: ``[tokens, units]`` activations; ``token_ids``: ``[tokens]`` global token ids."""
        values = values.detach().float().cpu()
        magnitudes = values.abs()
        self.abs_sum += magnitudes.sum(0, dtype=torch.float64)
        self.count += values.shape[0]
        all_magnitudes = torch.cat([self.magnitudes, magnitudes])
        all_values = torch.cat([self.values, values])
        all_tokens = torch.cat([self.tokens, token_ids[:, None].expand_as(values)])
        top = all_magnitudes.topk(min(self.k, all_magnitudes.shape[0]), dim=0).indices
        self.magnitudes = all_magnitudes.gather(0, top)
        self.values = all_values.gather(0, top)
        self.tokens = all_tokens.gather(0, top)


def unit_contexts(
    model: nn.Module,
    tokenizer,
    masks: Masks,
    texts: TextsLike,
    *,
    top_k: int = 5,
    context_tokens: int = 8,
    batch_size: int = 8,
    max_length: int = 128,
    skip_special: bool = True,
    progress: bool = True,
) -> list[UnitContexts]:
    """The reference contexts where each pruned neuron or head of ``masks`` activates most.

    One forward pass per batch of ``texts`` (no gradients); only the pruned units are tracked, with
    a running top-k, so memory does not grow with the number of texts.

    Args:
        model: The model the masks were selected on (a ``*ForCausalLM`` or a ``PeftModel``; its
            adapters are disabled during the pass).
        tokenizer: Its tokenizer.
        masks: Neuron- or head-level masks.
        texts: Reference texts (anything :func:`hf_sparc.attribute` accepts; prompt/continuation
            dicts are read as one text).
        top_k: Contexts per unit.
        context_tokens: Preceding tokens shown with each top token.
        batch_size: Texts per forward pass.
        max_length: Texts are truncated to this many tokens.
        skip_special: Ignore positions holding special tokens (e.g. BOS, where many units fire
            regardless of content).
        progress: Show a tqdm bar.

    Returns:
        One :class:`UnitContexts` per pruned unit, in module order, then unit order.

    Raises:
        ValueError: weight-level masks, bad ``top_k``/``context_tokens``, or a masked module the
            model does not have.
    """
    if masks.level not in ("neuron", "head"):
        raise ValueError(f"unit_contexts needs neuron- or head-level masks; these are {masks.level}-level.")
    if top_k < 1 or context_tokens < 0:
        raise ValueError(f"top_k must be >= 1 and context_tokens >= 0, got {top_k} and {context_tokens}.")
    base = unwrap_model(model)
    samples = tokenize(texts, tokenizer, max_length=max_length, require_explained=False)
    stream = _TokenStream(samples, set(getattr(tokenizer, "all_special_ids", [])) if skip_special else set())
    trackers = {name: _TopK(idx.numel(), top_k) for name, idx in masks.items()}
    with ExitStack() as stack:
        _track_pruned_units(stack, base, masks, trackers, stream)
        stack.enter_context(eval_mode(model))
        stack.enter_context(_adapters_off(model))
        stack.enter_context(torch.inference_mode())
        bar = stack.enter_context(progress_bar(len(samples), "hf_sparc unit contexts", progress))
        device = base.get_input_embeddings().weight.device
        pad_id = getattr(tokenizer, "pad_token_id", None) or 0
        for batch in batches(samples, batch_size, pad_id):
            stream.start(batch, device)
            base.base_model(
                input_ids=batch.input_ids.to(device),
                attention_mask=batch.attention_mask.to(device),
                use_cache=False,
            )
            bar.update(batch.input_ids.shape[0])
    return [
        _unit_contexts(name, unit, column, masks.level, trackers[name], stream, tokenizer, context_tokens)
        for name, idx in masks.items()
        for column, unit in enumerate(idx.tolist())
    ]


class _TokenStream:
    """Every token of the samples in one global numbering, and which ones the current batch scores."""

    def __init__(self, samples: list[Sample], skipped_ids: set[int]) -> None:
        self.offsets = [0]
        for sample in samples:
            self.offsets.append(self.offsets[-1] + len(sample.input_ids))
        self.ids = torch.tensor([t for s in samples for t in s.input_ids], dtype=torch.long)
        self.skipped = torch.tensor(sorted(skipped_ids), dtype=torch.long)
        self.select = self.token_ids = torch.empty(0)

    def start(self, batch: Batch, device: torch.device) -> None:
        """Scored positions of ``batch``: real tokens that are not skipped (special) ids."""
        real = batch.attention_mask.bool()
        if self.skipped.numel():
            real &= ~torch.isin(batch.input_ids, self.skipped)
        starts = torch.tensor(self.offsets[batch.first_index : batch.first_index + real.shape[0]])
        global_ids = starts[:, None] + torch.arange(batch.input_ids.shape[1])[None, :]
        self.select, self.token_ids = real.flatten().to(device), global_ids[real]

    def context(self, token_id: int, context_tokens: int, tokenizer, activation: float) -> Context:
        text = int(torch.searchsorted(torch.tensor(self.offsets), token_id, right=True)) - 1
        first = max(self.offsets[text], token_id - context_tokens)
        return Context(
            text_index=text,
            position=token_id - self.offsets[text],
            token=tokenizer.decode([int(self.ids[token_id])]),
            before=tokenizer.decode(self.ids[first:token_id].tolist(), skip_special_tokens=True),
            activation=activation,
        )


def _track_pruned_units(
    stack: ExitStack, model: nn.Module, masks: Masks, trackers: dict[str, _TopK], stream: _TokenStream
) -> None:
    """Hook each masked module's unit site (removed when ``stack`` closes) to feed its tracker."""
    spec = get_architecture(model)

    def observe(name: str, site: torch.Tensor) -> None:
        units = masks[name].to(site.device)
        rows = site.reshape(-1, site.shape[-1])[stream.select]
        if masks.level == "head":
            heads = rows.view(rows.shape[0], masks.shapes[name][0], -1)[:, units]
            trackers[name].add(heads.float().norm(dim=-1), stream.token_ids)
        else:
            trackers[name].add(rows[:, units], stream.token_ids)

    for name in masks:
        try:
            hook = hook_unit_site(model, spec, masks.level, name, lambda site, n=name: observe(n, site))
        except AttributeError:
            raise ValueError(f"The model has no module {name!r} named by the masks.") from None
        stack.callback(hook.remove)


def _unit_contexts(
    name: str,
    unit: int,
    column: int,
    level: str,
    tracker: _TopK,
    stream: _TokenStream,
    tokenizer,
    context_tokens,
) -> UnitContexts:
    contexts = tuple(
        stream.context(
            int(tracker.tokens[row, column]), context_tokens, tokenizer, float(tracker.values[row, column])
        )
        for row in range(tracker.tokens.shape[0])
    )
    mean = float(tracker.abs_sum[column] / tracker.count) if tracker.count else 0.0
    return UnitContexts(name, unit, level, layer_of(name), mean, contexts)


def save_unit_report(
    model: nn.Module,
    tokenizer,
    masks: Masks,
    texts: TextsLike,
    folder: str | os.PathLike,
    *,
    title: str | None = None,
    **options: Any,
) -> tuple[list[UnitContexts], str]:
    """Write ``layers.png`` (:func:`plot_layers`) and ``units.json`` (:func:`to_json`) to ``folder``.

    For neuron and head masks the units' top contexts on ``texts`` are read with
    :func:`unit_contexts` (``options`` go to it); weight masks list counts only. Returns the
    units and their :func:`render_markdown` listing.
    """
    units = []
    if masks.level in ("neuron", "head"):
        units = unit_contexts(model, tokenizer, masks, texts, **options)
    write_files(folder, {"layers.png": layers_figure(masks, title), "units.json": to_json(units, masks)})
    return units, render_markdown(units, masks)


def correction_notes(
    model: nn.Module,
    tokenizer,
    masks: Masks,
    references: TextsLike,
    folder: str | os.PathLike,
    *,
    batch_size: int = 8,
    max_length: int = 128,
) -> list[str]:
    """Report paragraphs of a correction: where the cut units sit (``layers.png``) and, for
    neurons and heads, the top-3 contexts where each fires on the undesired ``references``
    (also as ``units.json``); see :func:`save_unit_report`."""
    units, listing = save_unit_report(
        model, tokenizer, masks, references, folder,
        title=f"{masks.total()} {masks.level}s cut, per layer",
        top_k=3, batch_size=batch_size, max_length=max_length, progress=False,
    )  # fmt: skip
    notes = ["## Where the cut units sit\n\n![](layers.png)"]
    if units:
        notes.append(
            "## What the cut units respond to\n\nTop activations of each cut unit on the undesired "
            "references (the model's own continuations), the top token in bold after its context.\n\n"
            + listing
        )
    return notes
