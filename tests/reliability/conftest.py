"""Fixtures of the reliability suite: a saved base model, a saved adapter and pruner for it."""

from __future__ import annotations

from pathlib import Path

import pytest
from sparc_fixtures import masks_for, tiny_model
from transformers import AutoModelForCausalLM

import hf_sparc
from reliability.helpers import Saved, logits


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
