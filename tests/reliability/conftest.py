"""Shared fixtures of the reliability suite: a saved base model, a saved adapter and pruner for it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from sparc_fixtures import masks_for, tiny_model, tokens
from transformers import AutoModelForCausalLM

import hf_sparc

# What a loader may raise for damaged, foreign or mismatched input; anything else is a crash.
# (json.JSONDecodeError and UnicodeDecodeError are ValueErrors; FileNotFoundError is an OSError.)
CLEAN_ERRORS = (ValueError, OSError)


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Copies of every parameter and buffer, by name in the un-wrapped model."""
    state = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    return {n.replace(".base_layer", ""): t.detach().clone() for n, t in state.items() if "pruning_" not in n}


def assert_bit_identical(model: torch.nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = snapshot(model)
    assert after.keys() == before.keys()
    changed = [n for n, t in after.items() if not torch.equal(t, before[n])]
    assert not changed, f"parameters changed: {changed[:5]}"


def logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(tokens()).logits


@dataclass(frozen=True)
class Saved:
    """A tiny Llama saved as a checkpoint, a neuron adapter for it and the pruner that made it."""

    base: Path
    adapter: Path
    pruner: Path
    masks: hf_sparc.Masks
    expected: torch.Tensor  # logits of the base model with the adapter applied

    def fresh_base(self) -> torch.nn.Module:
        return AutoModelForCausalLM.from_pretrained(self.base).eval()


@pytest.fixture(scope="session")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Saved:
    root = tmp_path_factory.mktemp("saved")
    tiny_model("llama").save_pretrained(root / "base")
    model = AutoModelForCausalLM.from_pretrained(root / "base").eval()
    masks = masks_for(model, "neuron")
    peft_model = hf_sparc.apply_masks(model, masks)
    hf_sparc.save_adapter(peft_model, root / "adapter")
    pruner = hf_sparc.SparcPruner(hf_sparc.SparcConfig(method="magnitude", count=10))
    pruner.fit(tiny_model("llama"))
    pruner.save_pretrained(root / "pruner")
    return Saved(root / "base", root / "adapter", root / "pruner", masks, logits(peft_model))


@pytest.fixture
def adapter_copy(saved: Saved, tmp_path: Path) -> Path:
    """A private copy of the saved adapter, free to damage."""
    target = tmp_path / "adapter"
    target.mkdir()
    for file in saved.adapter.iterdir():
        (target / file.name).write_bytes(file.read_bytes())
    return target
