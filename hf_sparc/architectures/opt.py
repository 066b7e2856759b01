"""OPT decoders (ReLU MLP ``fc1``/``fc2``, LayerNorm, learned positions)."""

from hf_sparc.architectures.base import ArchitectureSpec

OPT = ArchitectureSpec(
    name="OPT",
    model_types=("opt",),
    layers="model.decoder.layers",
    attention="self_attn",
    query="self_attn.q_proj",
    key="self_attn.k_proj",
    value="self_attn.v_proj",
    attention_output="self_attn.out_proj",
    mlp_up="fc1",
    mlp_down="fc2",
    mlp_activation="activation_fn",
    position_embeddings=("model.decoder.embed_positions",),
)
