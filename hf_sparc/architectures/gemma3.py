"""Gemma 3 text decoders (gated GELU MLP, q/k norms, sliding-window layers)."""

from hf_sparc.architectures.base import ArchitectureSpec

GEMMA3 = ArchitectureSpec(
    name="Gemma3",
    model_types=("gemma3_text",),
    layers="model.layers",
    attention="self_attn",
    query="self_attn.q_proj",
    key="self_attn.k_proj",
    value="self_attn.v_proj",
    attention_output="self_attn.o_proj",
    mlp_gate="mlp.gate_proj",
    mlp_up="mlp.up_proj",
    mlp_down="mlp.down_proj",
    mlp_activation="mlp.act_fn",
)
