"""Resolving an architecture's module paths on one model instance."""

from __future__ import annotations

from collections.abc import Iterator

from torch import nn

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


def is_projection(module: nn.Module) -> bool:
    """A linear map with a 2-D weight: ``nn.Linear`` or transformers' ``Conv1D``."""
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"
