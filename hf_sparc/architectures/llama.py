"""Llama-style decoders: Llama, SmolLM2, TinyLlama, Mistral, Qwen2, Qwen3 (gated SiLU MLP, RoPE)."""

from hf_sparc.architectures.base import ArchitectureSpec

LLAMA = ArchitectureSpec(
    name="Llama family",
    model_types=("llama", "mistral", "qwen2", "qwen3"),
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
