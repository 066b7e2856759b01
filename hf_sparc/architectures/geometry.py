"""Geometry of one model instance: where each part lives and how its weights are laid out.

This is the only place that decides a projection's **orientation** (``nn.Linear`` stores its
weight ``[out, in]``, transformers' GPT-2 ``Conv1D`` stores ``[in, out]``), looks **through PEFT
wrappers** to the layer that holds the weight, gives the **shape of a level's units** in a module,
and maps **units to weight slices** (a neuron is an output row, a head a block of input columns of
the attention output projection). Everything that reads or writes weights by unit asks here: a
wrong orientation would silently prune the wrong units.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from hf_sparc.architectures.base import ArchitectureSpec


def decoder_layers(model: nn.Module, spec: ArchitectureSpec) -> Iterator[tuple[str, nn.Module]]:
    """Yield ``(name, layer)`` for each decoder layer of an unwrapped ``*ForCausalLM`` model."""
    try:
        layers = model.get_submodule(spec.layers)
    except AttributeError as error:
        raise ValueError(
            f"{type(model).__name__} has no {spec.layers!r}; it does not look like a {spec.name} "
            "causal LM (is it the *ForCausalLM model, not the bare backbone?)."
        ) from error
    for index, layer in enumerate(layers):
        yield f"{spec.layers}.{index}", layer


def layer_part_names(model: nn.Module, spec: ArchitectureSpec, part: str) -> list[str]:
    """Full module names of ``part`` (an attribute of ``spec``, e.g. ``"mlp_up"``) in every layer."""
    relative = getattr(spec, part)
    if relative is None:
        return []
    return [f"{prefix}.{relative}" for prefix, _ in decoder_layers(model, spec)]


def attention_output_name(spec: ArchitectureSpec, attention_name: str) -> str:
    """Name of the projection fed by the heads of the attention module ``attention_name``."""
    if not attention_name.endswith(spec.attention):
        raise ValueError(f"{attention_name!r} is not a {spec.name} attention module (…{spec.attention}).")
    return attention_name[: -len(spec.attention)] + spec.attention_output


def unit_site(spec: ArchitectureSpec, level: str, name: str) -> tuple[str, str]:
    """Where the activations of ``level``'s units in module ``name`` are read: ``(module name,
    "output")`` for neurons, ``(attention output projection, "input")`` for the heads of the
    attention module ``name`` (the concatenated heads feed that projection)."""
    if level == "head":
        return attention_output_name(spec, name), "input"
    return name, "output"


def base_layer(module: nn.Module) -> nn.Module:
    """The layer holding the real weight: ``module`` itself, or the base layer inside a PEFT
    wrapper (LoRA, SPARC, ...)."""
    get_base = getattr(module, "get_base_layer", None)
    return get_base() if callable(get_base) else module


def is_projection(module: nn.Module) -> bool:
    """A linear map with a 2-D weight (looking through PEFT wrappers): ``nn.Linear`` or ``Conv1D``."""
    return isinstance(base_layer(module), (nn.Linear, Conv1D))


# Quantized linear layers (bitsandbytes, GPTQ, AWQ, HQQ) by class name: their weights are packed
# codes, which no mask may write to and no weight-based score may read.
_QUANTIZED_LAYERS = ("Linear4bit", "Linear8bitLt", "QuantLinear", "WQLinear", "HQQLinear", "QLinear")
QUANTIZED_HINT = "dequantize the model (or load it in full precision) first"


def is_quantized(module: nn.Module) -> bool:
    """Whether the layer holding ``module``'s weight stores quantized codes instead of real weights."""
    layer = base_layer(module)
    weight = getattr(layer, "weight", None)
    if type(layer).__name__ in _QUANTIZED_LAYERS or hasattr(weight, "quant_state"):
        return True
    return isinstance(weight, torch.Tensor) and not weight.dtype.is_floating_point


def is_transposed(module: nn.Module) -> bool:
    """Whether the weight is stored ``[in, out]`` (GPT-2's ``Conv1D``) instead of ``[out, in]``."""
    return isinstance(base_layer(module), Conv1D)


def output_dim(module: nn.Module) -> int:
    """The weight dimension that indexes output features (neurons): 0, or 1 for ``Conv1D``."""
    return 1 if is_transposed(module) else 0


def input_dim(module: nn.Module) -> int:
    """The weight dimension that indexes input features: 1, or 0 for ``Conv1D``."""
    return 1 - output_dim(module)


def weight_shape(module: nn.Module) -> tuple[int, ...]:
    """Shape of the weight as stored (looking through PEFT wrappers); ``()`` without a weight."""
    weight = getattr(base_layer(module), "weight", None)
    return tuple(weight.shape) if weight is not None else ()


def out_features(module: nn.Module) -> int:
    """Number of output features (neurons) of a projection."""
    return weight_shape(module)[output_dim(module)]


def in_features(module: nn.Module) -> int:
    """Number of input features of a projection."""
    return weight_shape(module)[input_dim(module)]


def as_out_in(tensor: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """A weight-shaped tensor of ``module`` viewed ``[out, in]`` (transposed view for ``Conv1D``)."""
    return tensor.t() if is_transposed(module) else tensor


def unit_shape(level: str, module: nn.Module, num_heads: int | None = None) -> tuple[int, ...]:
    """Shape of the units of ``level`` scored in ``module``: the weight shape (``"weight"``),
    ``(out_features,)`` (``"neuron"``) or ``(num_heads,)`` (``"head"``)."""
    if level == "weight":
        return weight_shape(module)
    if level == "neuron":
        return (out_features(module),)
    if level == "head":
        if num_heads is None:
            raise ValueError("Head-level units need the number of heads.")
        return (num_heads,)
    raise ValueError(f"Level {level!r} has no units in a module.")


def head_columns(heads: torch.Tensor, module: nn.Module, num_heads: int) -> torch.Tensor:
    """Input features of the attention output projection ``module`` that carry ``heads``."""
    width = in_features(module)
    if width % num_heads:
        raise ValueError(f"{width} input features do not split into {num_heads} heads.")
    head_dim = width // num_heads
    return (heads[:, None] * head_dim + torch.arange(head_dim, device=heads.device)).flatten()


def unit_weight_slice(level: str, module: nn.Module) -> int:
    """The weight dimension along which a unit of ``level`` is a slice: output rows for neurons,
    input columns for heads (of the attention output projection)."""
    if level == "neuron":
        return output_dim(module)
    if level == "head":
        return input_dim(module)
    raise ValueError(f"A {level!r} is not a slice of a weight.")
