"""GPT-2 decoders (``Conv1D`` projections with fused q/k/v, GELU MLP, learned positions)."""

from hf_sparc.architectures.base import ArchitectureSpec

GPT2 = ArchitectureSpec(
    name="GPT-2",
    model_types=("gpt2",),
    layers="transformer.h",
    attention="attn",
    fused_qkv="attn.c_attn",
    attention_output="attn.c_proj",
    mlp_up="mlp.c_fc",
    mlp_down="mlp.c_proj",
    mlp_activation="mlp.act",
    position_embeddings=("transformer.wpe",),
)
