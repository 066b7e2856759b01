"""An adapter (or masks) made for model A, loaded on model B: refused before anything changes."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from sparc_fixtures import VOCAB
from transformers import AutoModelForCausalLM, LlamaConfig, MistralConfig, OPTConfig, PretrainedConfig

import hf_sparc
from hf_sparc.tuner import SparcLayer
from reliability.helpers import Saved, assert_bit_identical, snapshot


def _llama(**changes: int) -> PretrainedConfig:
    """The saved adapter's model (sparc_fixtures' tiny Llama) with ``changes``."""
    dims = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    return LlamaConfig(vocab_size=VOCAB, **{**dims, **changes})


OTHER_MODELS: dict[str, tuple[Callable[[], PretrainedConfig], str]] = {
    "more layers": (lambda: _llama(num_hidden_layers=3), "expects 2 decoder layers, model has 3"),
    "fewer layers": (lambda: _llama(num_hidden_layers=1), r"model\.layers\.1\.mlp\.up_proj is missing"),
    "hidden size": (
        lambda: _llama(hidden_size=48, head_dim=8),
        r"expects weight shape \[64, 32\], model has \[64, 48\]",
    ),
    # same module names and shapes: only the architecture tells them apart
    "same-named architecture": (
        lambda: MistralConfig(
            vocab_size=VOCAB,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
        ),
        "it is a 'mistral' model",
    ),
}


def _build(config: Callable[[], PretrainedConfig]) -> torch.nn.Module:
    torch.manual_seed(3)
    return AutoModelForCausalLM.from_config(config()).eval()


def _auto_on(saved: Saved, model: torch.nn.Module, tmp_path: Path) -> None:
    """AutoModelForCausalLM.from_pretrained(adapter) with the adapter pointing at ``model`` saved."""
    model.save_pretrained(tmp_path / "base")
    shutil.copytree(saved.adapter, tmp_path / "adapter")
    config = tmp_path / "adapter" / "adapter_config.json"
    config.write_text(
        json.dumps({**json.loads(config.read_text()), "base_model_name_or_path": str(tmp_path / "base")})
    )
    AutoModelForCausalLM.from_pretrained(tmp_path / "adapter")


ADAPTER_LOADERS: dict[str, Callable[[Saved, torch.nn.Module, Path], object]] = {
    "PeftModel.from_pretrained": lambda s, m, t: PeftModel.from_pretrained(m, s.adapter),
    "model.load_adapter": lambda s, m, t: m.load_adapter(s.adapter),
    "AutoModelForCausalLM.from_pretrained": lambda s, m, t: _auto_on(s, m, t),
}
MASKS_LOADERS: dict[str, Callable[[Saved, torch.nn.Module, Path], object]] = {
    "apply_masks": lambda s, m, t: hf_sparc.apply_masks(m, s.masks),
    "SparcPruner.prune": lambda s, m, t: hf_sparc.SparcPruner.from_pretrained(s.pruner).prune(m),
}
# Masks record only the shape of the units they scored (neurons per module), not the whole model, so
# they can be checked against a model only where those differ: more layers, another hidden size or a
# same-named architecture are caught for adapters (which record weight shapes, layers, model_type).
MASKS_MISMATCHES: dict[str, tuple[Callable[[], PretrainedConfig], str]] = {
    "fewer layers": (OTHER_MODELS["fewer layers"][0], "does not have"),
    "intermediate size": (lambda: _llama(intermediate_size=48), r"selected for shape \(64,\).*\(48,\)"),
    "architecture": (
        lambda: OPTConfig(
            vocab_size=VOCAB,
            hidden_size=32,
            ffn_dim=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            word_embed_proj_dim=32,
        ),
        "does not have",
    ),
}


def _refused_untouched(model: torch.nn.Module, load: Callable[[], object], pattern: str) -> None:
    before = snapshot(model)
    with pytest.raises(ValueError, match=pattern):
        load()
    assert_bit_identical(model, before)
    assert not any(isinstance(m, SparcLayer) for m in model.modules()), "an adapter layer was left behind"


@pytest.mark.parametrize("loader", list(ADAPTER_LOADERS))
@pytest.mark.parametrize("other", list(OTHER_MODELS))
def test_adapter_for_another_model_is_refused_before_any_change(
    saved: Saved, tmp_path: Path, loader: str, other: str
) -> None:
    config, pattern = OTHER_MODELS[other]
    model = _build(config)
    _refused_untouched(model, lambda: ADAPTER_LOADERS[loader](saved, model, tmp_path), pattern)


@pytest.mark.parametrize("loader", list(MASKS_LOADERS))
@pytest.mark.parametrize("other", list(MASKS_MISMATCHES))
def test_masks_for_another_model_are_refused_before_any_change(
    saved: Saved, tmp_path: Path, loader: str, other: str
) -> None:
    config, pattern = MASKS_MISMATCHES[other]
    model = _build(config)
    _refused_untouched(model, lambda: MASKS_LOADERS[loader](saved, model, tmp_path), pattern)
