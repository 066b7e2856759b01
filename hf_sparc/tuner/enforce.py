"""Keep pruned weights at exactly zero while a masked model is trained.

A :class:`ZeroingPlan` lists the ``(tensor, indices, dim)`` slices whose zeroing prunes a set of
masks exactly, LoRA deltas included; applying it after every optimizer step means fine-tuning
(full or LoRA) cannot revive cut units. ``SparcPruner`` uses it as its ``Trainer`` callback.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from hf_sparc.architectures import geometry, get_architecture, unwrap_model
from hf_sparc.masks import Masks

Slice = tuple[torch.Tensor, torch.Tensor, int | None]
"""``(tensor, indices, dim)``: ``tensor.index_fill_(dim, indices, 0)``; ``dim=None``: flat element ids."""


@dataclass(frozen=True)
class ZeroingPlan:
    """The slices to zero to prune ``masks`` in ``model``, built once per model and masks.

    Neuron: output rows of the weight (+ bias entries, + LoRA B rows); head: the head's input
    columns of the attention output projection (+ LoRA A columns); weight: elements.
    """

    slices: tuple[Slice, ...]

    @classmethod
    def build(cls, model: nn.Module, masks: Masks) -> ZeroingPlan:
        """Plan for ``model`` (a ``*ForCausalLM``, ``PeftModel`` or LoRA-wrapped model) and ``masks``.

        Raises:
            ValueError: soft masks; weight-level masks on a module that also carries a LoRA delta
                (``B·A`` is dense, so no slice of the adapter keeps those weights at zero).
        """
        if masks.soft:
            raise ValueError(
                "Dampened (soft) masks cannot be kept during training: a scaled weight is not a fixed "
                "point of the optimizer. Train with binary masks, or dampen after training."
            )
        base = unwrap_model(model)
        spec = get_architecture(base)
        slices: list[Slice] = []
        for name, index in masks.items():
            site, _ = geometry.unit_site(spec, masks.level, name)
            wrapper = base.get_submodule(site)
            if geometry.is_quantized(wrapper):
                raise ValueError(
                    f"{site} is quantized: its weights cannot be zeroed; {geometry.QUANTIZED_HINT}."
                )
            weight = geometry.base_layer(wrapper).weight
            if masks.level == "weight":
                if _lora_weights(wrapper, "lora_B"):
                    raise ValueError(
                        f"{name}: weight-level masks cannot be kept exact under a LoRA delta on the same "
                        "module (B·A is dense); put LoRA on other modules, or use neuron/head level."
                    )
                slices.append((weight, index.to(weight.device), None))
            elif masks.level == "head":
                columns = geometry.head_columns(index, wrapper, masks.shapes[name][0]).to(weight.device)
                slices.append((weight, columns, geometry.unit_weight_slice("head", wrapper)))
                slices.extend((a, columns, 1) for a in _lora_weights(wrapper, "lora_A"))
            else:
                index = index.to(weight.device)
                slices.append((weight, index, geometry.unit_weight_slice("neuron", wrapper)))
                bias = getattr(geometry.base_layer(wrapper), "bias", None)
                if bias is not None:
                    slices.append((bias, index, 0))
                slices.extend((b, index, 0) for b in _lora_weights(wrapper, "lora_B"))
        return cls(tuple(slices))

    @torch.no_grad()
    def apply(self) -> None:
        """Set every planned slice to exactly zero, in place."""
        for tensor, index, dim in self.slices:
            if dim is None:
                tensor.view(-1)[index] = 0
            else:
                tensor.index_fill_(dim, index, 0)


def _lora_weights(module: nn.Module, part: str) -> list[torch.Tensor]:
    """Weights of the LoRA ``lora_A``/``lora_B`` layers on ``module``, one per LoRA adapter."""
    container = getattr(module, part, None)
    return [layer.weight for layer in container.values()] if isinstance(container, nn.ModuleDict) else []
