"""What hf_sparc needs to know about one model family: where its parts live.

An architecture is described by module paths *relative to one decoder layer*, plus the path
of the layer list. Everything else (LRP rules, relevance collection, masks) is derived from
these names, so adding a model family means writing one small spec file.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ArchitectureSpec:
    """Where the parts of one causal-LM family live, relative to each decoder layer.

    Attributes:
        name: Human-readable family name used in error messages.
        model_types: ``config.model_type`` values served by this spec.
        layers: Path of the ``nn.ModuleList`` of decoder layers, from the ``*ForCausalLM`` model.
        attention: Attention block (head-level relevance is keyed by this module's name).
        query, key, value: Separate q/k/v projections (``None`` when fused).
        fused_qkv: One projection producing ``[q | k | v]`` along the last dim (GPT-2's ``c_attn``).
        attention_output: Projection whose *input* is the concatenation of the heads.
        mlp_up: Projection whose outputs are the MLP neurons (default neuron-level target).
        mlp_gate: Gate projection of a gated MLP (``None`` for plain MLPs).
        mlp_down: Projection back to the residual stream.
        mlp_activation: The element-wise non-linearity module of the MLP.
        position_embeddings: Learned absolute position embedding modules (from the top model),
            counted as inputs for token-level relevance.
    """

    name: str
    model_types: tuple[str, ...]
    layers: str
    attention: str
    attention_output: str
    mlp_up: str
    mlp_down: str
    mlp_activation: str
    query: str | None = None
    key: str | None = None
    value: str | None = None
    fused_qkv: str | None = None
    mlp_gate: str | None = None
    position_embeddings: tuple[str, ...] = ()
