"""Registry of supported architectures.

To add a model family: write ``hf_sparc/architectures/<family>.py`` with one
:class:`ArchitectureSpec` and add it to ``_REGISTRY`` below. See docs/ARCHITECTURE.md.
"""

from __future__ import annotations

from torch import nn

from hf_sparc.architectures.base import ArchitectureSpec
from hf_sparc.architectures.gemma3 import GEMMA3
from hf_sparc.architectures.geometry import (
    attention_output_name,
    decoder_layers,
    is_projection,
    layer_part_names,
)
from hf_sparc.architectures.gpt2 import GPT2
from hf_sparc.architectures.llama import LLAMA
from hf_sparc.architectures.opt import OPT

_REGISTRY: tuple[ArchitectureSpec, ...] = (LLAMA, OPT, GPT2, GEMMA3)

__all__ = [
    "ArchitectureSpec",
    "attention_output_name",
    "decoder_layers",
    "get_architecture",
    "is_projection",
    "layer_part_names",
    "supported_model_types",
    "unwrap_model",
]


def supported_model_types() -> list[str]:
    """All ``config.model_type`` values hf_sparc can attribute and mask."""
    return sorted(t for spec in _REGISTRY for t in spec.model_types)


def unwrap_model(model: nn.Module) -> nn.Module:
    """Return the ``transformers`` model inside a ``PeftModel`` (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def get_architecture(model: nn.Module) -> ArchitectureSpec:
    """Look up the spec for ``model`` (a ``*ForCausalLM`` or a ``PeftModel`` around one)."""
    config = getattr(unwrap_model(model), "config", None)
    model_type = getattr(config, "model_type", None)
    for spec in _REGISTRY:
        if model_type in spec.model_types:
            return spec
    raise ValueError(
        f"Unsupported architecture {model_type!r} ({type(model).__name__}). hf_sparc supports "
        f"model_type in {supported_model_types()}. To add one, write an ArchitectureSpec in "
        "hf_sparc/architectures/<family>.py and register it in hf_sparc/architectures/__init__.py "
        "(see docs/ARCHITECTURE.md)."
    )
