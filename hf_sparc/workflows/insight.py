"""What pruned units did: the reference contexts where each one fires most, and where the cut sits.

Stable public API (used by ``hf-sparc inspect`` and by the correction report):

* :func:`unit_contexts` ``(model, tokenizer, masks, texts, *, top_k=5, context_tokens=8,
  batch_size=8, max_length=128, skip_special=True, progress=True) -> list[UnitContexts]``:
  for every pruned neuron or head of a :class:`~hf_sparc.Masks`, the ``top_k`` token positions of
  ``texts`` where it activates most, each with the preceding ``context_tokens`` tokens.
* :func:`render_markdown` ``(units, masks=None) -> str`` and :func:`to_json`
  ``(units, masks=None) -> dict``: the same listing as markdown / JSON-serialisable data.
* :func:`plot_layers` ``(masks, path, title=None) -> None``: a per-layer bar chart (PNG) of how
  many units are cut in each decoder layer, stacked by module kind.
* :func:`save_unit_report` ``(model, tokenizer, masks, texts, folder, *, title=None, **options)
  -> tuple[list[UnitContexts], str]``: ``layers.png`` and ``units.json`` in ``folder``, and the
  markdown listing (what ``hf-sparc inspect`` writes); :func:`correction_notes` wraps it into the
  report paragraphs of ``hf-sparc correct``/``sweep`` and ``examples/demo.py``.
* :func:`adapter_masks` ``(peft_model, adapter_name=None) -> Masks``: the masks of a SPARC adapter
  loaded in a ``PeftModel`` (e.g. from ``PeftModel.from_pretrained(base, adapter_dir)``).

What "activates" means per level:

* ``neuron``: the unit's output value of the masked module (e.g. an MLP up-projection feature);
  positions are ranked by ``|value|``, the signed value is reported.
* ``head``: the L2 norm of the head's output, i.e. its slice of the input of the attention output
  projection (exactly what a head mask zeroes).

Weight-level masks have no per-unit activation; :func:`plot_layers` and the counts in
:func:`render_markdown` still apply to them.

If ``model`` is a ``PeftModel`` its adapters are disabled while activations are read, so the
listing shows what the pruned units did *before* they were cut.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hf_sparc.architectures import attention_output_name, get_architecture, unwrap_model
from hf_sparc.data.batching import TextsLike, batches, tokenize
from hf_sparc.masks import Masks
from hf_sparc.metrics._common import eval_mode, progress_bar

__all__ = [
    "Context",
    "UnitContexts",
    "adapter_masks",
    "correction_notes",
    "layer_of",
    "plot_layers",
    "render_markdown",
    "save_unit_report",
    "to_json",
    "unit_contexts",
]


@dataclass(frozen=True)
class Context:
    """One token position where a unit fired.

    Attributes:
        text_index: Index of the text in the ``texts`` given to :func:`unit_contexts`.
        position: Token position inside that text (after tokenization and truncation).
        token: The token at ``position``, decoded.
        before: Up to ``context_tokens`` tokens preceding it, decoded (causal models: only these
            can influence the activation).
        activation: Neuron: the signed output value; head: the norm of the head's output.
    """

    text_index: int
    position: int
    token: str
    before: str
    activation: float


@dataclass(frozen=True)
class UnitContexts:
    """The top contexts of one pruned unit.

    Attributes:
        module: Masks key of the unit's module (attention module for heads).
        unit: Neuron or head index within the module.
        level: ``"neuron"`` or ``"head"``.
        layer: Decoder layer index parsed from ``module`` (``None`` if it has no number).
        mean_activation: Mean ``|activation|`` over all scored tokens (for scale).
        contexts: Highest ``|activation|`` first.
    """

    module: str
    unit: int
    level: str
    layer: int | None
    mean_activation: float
    contexts: tuple[Context, ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def layer_of(module_name: str) -> int | None:
    """Decoder-layer index in a module name (the first ``.<number>`` component), else ``None``."""
    match = re.search(r"\.(\d+)(?:\.|$)", module_name)
    return int(match.group(1)) if match else None


def adapter_masks(peft_model: nn.Module, adapter_name: str | None = None) -> Masks:
    """The :class:`~hf_sparc.Masks` of one SPARC adapter of ``peft_model``.

    An adapter records only the modules it masks, so ``shapes`` (and ``size()``) cover those
    modules only: a layer in which nothing is pruned is not counted.

    Args:
        peft_model: A ``PeftModel`` holding SPARC adapters (as loaded by ``PeftModel.from_pretrained``).
        adapter_name: Which adapter; default: the only active one.

    Raises:
        ValueError: no such SPARC adapter, or several are active and none was named.
    """
    from hf_sparc.tuner.layer import SparcLayer

    configs = getattr(peft_model, "peft_config", None)
    if not configs:
        raise ValueError("The model holds no adapter; load one with PeftModel.from_pretrained(base, dir).")
    if adapter_name is None:
        active = list(peft_model.active_adapters)
        if len(active) != 1:
            raise ValueError(f"Several adapters are active ({active}); say which one with adapter_name=.")
        adapter_name = active[0]
    config = configs.get(adapter_name)
    if config is None or getattr(config, "peft_type", None) != "SPARC":
        raise ValueError(f"{adapter_name!r} is not a SPARC adapter here (adapters: {list(configs)}).")
    indices, shapes = {}, {}
    for name, layer in unwrap_model(peft_model).named_modules():
        if not isinstance(layer, SparcLayer) or adapter_name not in layer.pruning_indices:
            continue
        key = config.mask_modules.get(name, name)
        if config.level == "weight":
            shapes[key] = tuple(layer.base_layer.weight.shape)
        else:
            shapes[key] = (layer.n_components(adapter_name),)
        indices[key] = layer.indices(adapter_name).cpu()
    provenance = dict(config.provenance)
    return Masks(
        level=config.level,
        indices=indices,
        shapes=shapes,
        method=str(provenance.get("method", "")),
        rule=str(provenance.get("rule", "")),
        model_name=str(provenance.get("model_name", "")),
        n_samples=int(provenance.get("n_samples", 0)),
        settings=provenance.get("settings", {}),
    )


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
    spec = get_architecture(base)
    samples = tokenize(texts, tokenizer, max_length=max_length, require_explained=False)
    special = set(getattr(tokenizer, "all_special_ids", [])) if skip_special else set()
    trackers = {name: _TopK(idx.numel(), top_k) for name, idx in masks.items()}
    offsets = [0]
    for sample in samples:
        offsets.append(offsets[-1] + len(sample.input_ids))
    flat_ids = torch.tensor([t for s in samples for t in s.input_ids], dtype=torch.long)
    state: dict[str, torch.Tensor] = {}

    def observe(name: str, site: torch.Tensor) -> None:
        units = masks[name].to(site.device)
        rows = site.reshape(-1, site.shape[-1])[state["select"]]
        if masks.level == "head":
            heads = rows.view(rows.shape[0], masks.shapes[name][0], -1)[:, units]
            trackers[name].add(heads.float().norm(dim=-1), state["token_ids"])
        else:
            trackers[name].add(rows[:, units], state["token_ids"])

    with ExitStack() as stack:
        for name in masks:
            try:
                if masks.level == "head":
                    site = base.get_submodule(attention_output_name(spec, name))
                    hook = site.register_forward_pre_hook(lambda _m, inputs, n=name: observe(n, inputs[0]))
                else:
                    site = base.get_submodule(name)
                    hook = site.register_forward_hook(lambda _m, _i, output, n=name: observe(n, output))
            except AttributeError:
                raise ValueError(f"The model has no module {name!r} named by the masks.") from None
            stack.callback(hook.remove)
        stack.enter_context(eval_mode(model))
        stack.enter_context(_adapters_off(model))
        stack.enter_context(torch.inference_mode())
        bar = stack.enter_context(progress_bar(len(samples), "hf_sparc unit contexts", progress))
        device = base.get_input_embeddings().weight.device
        pad_id = getattr(tokenizer, "pad_token_id", None) or 0
        for batch in batches(samples, batch_size, pad_id):
            real = batch.attention_mask.bool()
            if special:
                real &= ~torch.isin(batch.input_ids, torch.tensor(sorted(special)))
            width = batch.input_ids.shape[1]
            starts = torch.tensor(offsets[batch.first_index : batch.first_index + real.shape[0]])
            global_ids = starts[:, None] + torch.arange(width)[None, :]
            state["select"] = real.flatten().to(device)
            state["token_ids"] = global_ids[real]
            base.base_model(
                input_ids=batch.input_ids.to(device),
                attention_mask=batch.attention_mask.to(device),
                use_cache=False,
            )
            bar.update(real.shape[0])

    offsets_t = torch.tensor(offsets)
    result = []
    for name, idx in masks.items():
        tracker = trackers[name]
        for column, unit in enumerate(idx.tolist()):
            contexts = []
            for row in range(tracker.tokens.shape[0]):
                token_id = int(tracker.tokens[row, column])
                text = int(torch.searchsorted(offsets_t, token_id, right=True)) - 1
                first = max(offsets[text], token_id - context_tokens)
                contexts.append(
                    Context(
                        text_index=text,
                        position=token_id - offsets[text],
                        token=tokenizer.decode([int(flat_ids[token_id])]),
                        before=tokenizer.decode(flat_ids[first:token_id].tolist(), skip_special_tokens=True),
                        activation=float(tracker.values[row, column]),
                    )
                )
            mean = float(tracker.abs_sum[column] / tracker.count) if tracker.count else 0.0
            result.append(UnitContexts(name, unit, masks.level, layer_of(name), mean, tuple(contexts)))
    return result


def _one_line(text: str) -> str:
    """Text safe inside one markdown line: newlines shown as ⏎, markup characters escaped."""
    text = text.replace("\r", "").replace("\n", "⏎")
    return re.sub(r"([\\`*_|<>\[\]])", r"\\\1", text)


def _grouped(masks: Masks) -> dict[int | None, dict[str, int]]:
    """Per layer, per module kind (name after the layer number): pruned counts."""
    groups: dict[int | None, dict[str, int]] = {}
    for name, idx in masks.items():
        layer = layer_of(name)
        kind = name.split(f".{layer}.", 1)[-1] if layer is not None else name
        groups.setdefault(layer, {}).setdefault(kind, 0)
        groups[layer][kind] += idx.numel()
    return groups


def render_markdown(units: Sequence[UnitContexts], masks: Masks | None = None) -> str:
    """Markdown listing: the per-module counts of ``masks`` (if given), then per layer and unit
    the top contexts, the top token in bold after its preceding context."""
    lines: list[str] = []
    if masks is not None:
        lines += [
            f"## Pruned {masks.level}s: {masks.total()} of {masks.size()}",
            "",
            masks.summary().to_markdown(),
            "",
        ]
    current: tuple[int | None, str] | None = None
    for unit in units:
        if (unit.layer, unit.module) != current:
            current = (unit.layer, unit.module)
            lines += ["", f"### `{unit.module}`", ""]
        shown = "; ".join(
            # bold markup must hug the text: a token's leading space goes outside it
            f"…{_one_line(c.before)}{' ' if c.token[:1].isspace() else ''}**{_one_line(c.token.strip())}** "
            f"({c.activation:+.3g})"
            for c in unit.contexts
        )
        lines.append(f"- {unit.level} {unit.unit} (mean |a| {unit.mean_activation:.3g}): {shown or '—'}")
    return "\n".join(lines).strip() + "\n"


def to_json(units: Sequence[UnitContexts], masks: Masks | None = None) -> dict[str, Any]:
    """JSON-serialisable form: ``{"level", "pruned", "size", "modules": {name: [ids]}, "units": [...]}``
    (the first four only when ``masks`` is given)."""
    data: dict[str, Any] = {}
    if masks is not None:
        data = {
            "level": masks.level,
            "pruned": masks.total(),
            "size": masks.size(),
            "modules": {name: idx.tolist() for name, idx in masks.items()},
        }
    data["units"] = [unit.to_dict() for unit in units]
    return data


def plot_layers(masks: Masks, path: str | os.PathLike, title: str | None = None) -> None:
    """Bar chart (PNG) of the pruned units per decoder layer, stacked by module kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = _grouped(masks)
    numbered = [layer for layer in groups if layer is not None]
    layers = list(range(max(numbered) + 1)) if numbered else []
    kinds = sorted({kind for per_layer in groups.values() for kind in per_layer})
    fig, ax = plt.subplots(figsize=(max(6.0, 0.3 * len(layers) + 2), 3.6))
    bottom = [0] * len(layers)
    for kind in kinds:
        heights = [groups.get(layer, {}).get(kind, 0) for layer in layers]
        ax.bar(layers, heights, bottom=bottom, label=kind)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    ax.set_xlabel("decoder layer")
    ax.set_ylabel(f"pruned {masks.level}s")
    if layers:
        ax.set_xticks(layers[:: max(1, math.ceil(len(layers) / 30))])
    if kinds:
        ax.legend(fontsize="small")
    default = f"{masks.total()} of {masks.size()} {masks.level}s pruned ({masks.method or 'masks'})"
    ax.set_title(title or default)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


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
    folder = Path(folder)
    plot_layers(masks, folder / "layers.png", title=title)
    units = []
    if masks.level in ("neuron", "head"):
        units = unit_contexts(model, tokenizer, masks, texts, **options)
    (folder / "units.json").write_text(json.dumps(to_json(units, masks), indent=2) + "\n")
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
