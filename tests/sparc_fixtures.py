"""Tiny random Llama / OPT / GPT-2 models and relevance for the adapter and Hub tests."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, OPTConfig

import hf_sparc
from hf_sparc import Masks, Relevance, RelevanceInfo
from hf_sparc.architectures import geometry, get_architecture

VOCAB = 100

CONFIGS = {
    "llama": lambda **kw: LlamaConfig(
        hidden_size=32,
        intermediate_size=kw.get("intermediate", 64),
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=VOCAB,
    ),
    "opt": lambda **kw: OPTConfig(
        hidden_size=32,
        ffn_dim=kw.get("intermediate", 64),
        num_hidden_layers=2,
        num_attention_heads=4,
        vocab_size=VOCAB,
        word_embed_proj_dim=32,
        max_position_embeddings=64,
    ),
    "gpt2": lambda **kw: GPT2Config(
        n_embd=32, n_inner=kw.get("intermediate"), n_layer=2, n_head=4, vocab_size=VOCAB, n_positions=64
    ),
}


def tiny_model(arch: str, seed: int = 0, dtype: torch.dtype = torch.float32, **kw) -> torch.nn.Module:
    """A tiny random ``*ForCausalLM`` in eval mode, the same weights for the same seed."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(CONFIGS[arch](**kw)).eval()
    # non-zero biases so that bias zeroing is observable
    with torch.no_grad():
        for module in model.modules():
            if getattr(module, "bias", None) is not None:
                module.bias.normal_()
    return model.to(dtype)


def assert_same_logits(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal up to float32 rounding.

    Two model instances with bit-identical weights and masks can still differ in the last bits
    on CPU (about 4e-7 here, one row of a batch in some runs), so logits are not compared with
    ``torch.equal``; a mask that is lost or misapplied moves them by orders of magnitude more.
    """
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


def tokens(seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (2, 9), generator=torch.Generator().manual_seed(seed))


def mlp_up_names(model: torch.nn.Module) -> list[str]:
    spec = get_architecture(model)
    layers = model.get_submodule(spec.layers)
    return [f"{spec.layers}.{i}.{spec.mlp_up}" for i in range(len(layers))]


def relevance(model: torch.nn.Module, level: str, seed: int = 0) -> Relevance:
    """Random relevance of the MLP up projections (neuron, weight) or the attention blocks (head)."""
    spec = get_architecture(model)
    generator = torch.Generator().manual_seed(seed)
    scores = {}
    for i in range(len(model.get_submodule(spec.layers))):
        if level == "head":
            scores[f"{spec.layers}.{i}.{spec.attention}"] = torch.randn(
                model.config.num_attention_heads, generator=generator
            )
        else:
            module = model.get_submodule(f"{spec.layers}.{i}.{spec.mlp_up}")
            shape = geometry.unit_shape(level, module)
            scores[f"{spec.layers}.{i}.{spec.mlp_up}"] = torch.randn(shape, generator=generator)
    return Relevance(scores, RelevanceInfo(method="lrp", level=level, n_samples=4, n_tokens=40))


def masks_for(model: torch.nn.Module, level: str, seed: int = 0, count: int | None = None) -> Masks:
    default = {"neuron": 10, "head": 3, "weight": 40}[level]
    return hf_sparc.select(relevance(model, level, seed), count=count or default)
