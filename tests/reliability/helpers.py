"""Helpers of the reliability suite: clean error types, parameter snapshots, the saved-model bundle."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from sparc_fixtures import tokens
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
