"""Soft (dampening) masks: units multiplied by a scale in [0, 1) instead of zeroed, end to end."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file, save_file
from sparc_fixtures import assert_same_logits, masks_for, tiny_model, tokens
from transformers.pytorch_utils import Conv1D

import hf_sparc
from hf_sparc import Masks
from hf_sparc.tuner.adapter_masks import adapter_masks
from hf_sparc.tuner.enforce import ZeroingPlan

ARCHS = ["llama", "opt", "gpt2"]


def logits(model):
    with torch.no_grad():
        return model(tokens()).logits


def soft_masks(model, level: str) -> Masks:
    """Masks whose units get distinct scales (some 0: a soft adapter may also cut)."""
    masks = masks_for(model, level)
    scales = {name: torch.linspace(0.0, 0.9, idx.numel()) for name, idx in masks.items()}
    return Masks(level, masks.indices, masks.shapes, rule=masks.rule, scales=scales)


def scaled_by_hand(model, masks: Masks):
    """An independent re-derivation: a copy whose weights (and biases) are multiplied by the scales."""
    model = copy.deepcopy(model)
    with torch.no_grad():
        for name, idx in masks.items():
            scale = masks.scale(name)
            if masks.level == "head":
                layer_prefix = name.rsplit(".", 1)[0]
                out_proj = next(
                    m
                    for n, m in model.named_modules()
                    if n.startswith(layer_prefix + ".") and n.endswith(("o_proj", "out_proj", "attn.c_proj"))
                )
                width = (
                    out_proj.weight.shape[0] if isinstance(out_proj, Conv1D) else out_proj.weight.shape[1]
                ) // masks.shapes[name][0]
                columns = (idx[:, None] * width + torch.arange(width)).flatten()
                per_column = scale.repeat_interleave(width)
                if isinstance(out_proj, Conv1D):
                    out_proj.weight[columns, :] *= per_column[:, None]
                else:
                    out_proj.weight[:, columns] *= per_column[None, :]
                continue
            layer = model.get_submodule(name)
            if isinstance(layer, Conv1D):
                layer.weight[:, idx] *= scale[None, :]
            else:
                layer.weight[idx, :] *= scale[:, None]
            if layer.bias is not None:
                layer.bias[idx] *= scale
    return model


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("level", ["neuron", "head"])
def test_soft_adapter_scales_units_merges_and_unmerges_exactly(arch, level):
    model = tiny_model(arch)
    masks = soft_masks(model, level)
    expected = logits(scaled_by_hand(model, masks))
    cut = logits(hf_sparc.apply_masks(tiny_model(arch), masks.dampened(0.0)))
    original = {n: p.detach().clone() for n, p in model.named_parameters()}
    peft_model = hf_sparc.apply_masks(model, masks)

    unmerged = logits(peft_model)
    assert_same_logits(unmerged, expected)
    assert (unmerged - cut).abs().max() > 1e-4  # dampening is not cutting
    peft_model.merge_adapter()
    assert_same_logits(logits(peft_model), expected)
    peft_model.unmerge_adapter()
    base = peft_model.get_base_model()
    restored = {n.replace(".base_layer", ""): p for n, p in base.named_parameters()}
    assert all(torch.equal(restored[n], value) for n, value in original.items())
    assert torch.equal(logits(peft_model), unmerged)


@pytest.mark.parametrize("level", ["neuron", "head"])
def test_soft_adapter_round_trips_and_exports_to_ia3(level, tmp_path):
    model = tiny_model("llama")
    masks = soft_masks(model, level)
    peft_model = hf_sparc.apply_masks(model, masks)
    expected = logits(peft_model)
    hf_sparc.save_adapter(peft_model, tmp_path / "sparc")
    assert json.loads((tmp_path / "sparc" / "adapter_config.json").read_text())["soft"] is True

    loaded = PeftModel.from_pretrained(tiny_model("llama"), tmp_path / "sparc")
    assert torch.equal(logits(loaded), expected)
    back = adapter_masks(loaded)
    assert back.soft
    for name in masks:
        assert torch.equal(back[name], masks[name]) and torch.equal(back.scale(name), masks.scale(name))

    hf_sparc.export_ia3(peft_model, tmp_path / "ia3")
    assert_same_logits(logits(PeftModel.from_pretrained(tiny_model("llama"), tmp_path / "ia3")), expected)


def test_edited_scales_are_refused(tmp_path):
    model = tiny_model("llama")
    hf_sparc.save_adapter(hf_sparc.apply_masks(model, soft_masks(model, "neuron")), tmp_path)
    weights = tmp_path / "adapter_model.safetensors"
    state = load_file(weights)
    key = next(k for k in state if "pruning_scales" in k)
    state[key] = state[key].flip(0)  # still valid scales, but not the ones the digest covers
    save_file(state, weights, metadata={"format": "pt"})
    with pytest.raises(ValueError, match="digest"):
        PeftModel.from_pretrained(tiny_model("llama"), tmp_path)

    state[key] = torch.full_like(state[key], 1.5)
    save_file(state, weights, metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"outside \[0, 1\)"):
        PeftModel.from_pretrained(tiny_model("llama"), tmp_path)


def test_two_soft_adapters_multiply_like_masks_union():
    model = tiny_model("llama")
    first = masks_for(model, "neuron", seed=0).dampened(0.5)
    second = masks_for(model, "neuron", seed=1).dampened(0.25)
    union = first.union(second)
    shared = {n: set(first[n].tolist()) & set(second[n].tolist()) for n in first if n in second}
    assert any(shared.values())  # the check below needs units in both
    for name, units in shared.items():
        scale = dict(zip(union[name].tolist(), union.scale(name).tolist(), strict=True))
        assert all(scale[u] == 0.125 for u in units)

    peft_model = hf_sparc.apply_masks(tiny_model("llama"), first, adapter_name="a")
    hf_sparc.apply_masks(peft_model, second, adapter_name="b")
    peft_model.base_model.set_adapter(["a", "b"])
    together = logits(peft_model)
    assert_same_logits(together, logits(hf_sparc.apply_masks(tiny_model("llama"), union)))


def test_masks_scales_are_checked_and_persist(tmp_path):
    model = tiny_model("llama")
    masks = masks_for(model, "neuron")
    name = next(iter(masks))
    n = masks[name].numel()
    weight = masks_for(model, "weight")
    with pytest.raises(ValueError, match="cannot carry scales"):
        Masks("weight", weight.indices, weight.shapes, scales={next(iter(weight)): torch.zeros(40)})
    for bad, pattern in (
        (torch.ones(n), r"outside \[0, 1\)"),
        (torch.zeros(n + 1), "scales for"),
        (torch.zeros(n, dtype=torch.int64), "floating-point"),
    ):
        with pytest.raises(ValueError, match=pattern):
            Masks("neuron", masks.indices, masks.shapes, scales={name: bad})
    with pytest.raises(ValueError, match=r"in \[0, 1\)"):
        masks.dampened(1.0)
    assert not masks.dampened(0.0).soft  # all-zero scales are a cut
    soft = masks.dampened(0.3)
    assert soft.soft and "dampen=0.3" in soft.rule and "dampened" in repr(soft)
    soft.save(tmp_path / "m.safetensors")
    loaded = Masks.load(tmp_path / "m.safetensors")
    assert all(torch.equal(loaded.scale(k), soft.scale(k)) and torch.equal(loaded[k], soft[k]) for k in soft)


def test_soft_masks_are_refused_for_training_enforcement():
    model = tiny_model("llama")
    with pytest.raises(ValueError, match="soft"):
        ZeroingPlan.build(model, masks_for(model, "neuron").dampened(0.5))


def test_ia3_copy_beside_the_adapter_loads_without_hf_sparc_types(tmp_path):
    model = tiny_model("llama")
    peft_model = hf_sparc.apply_masks(model, soft_masks(model, "neuron"))
    expected = logits(peft_model)
    hf_sparc.save_adapter(peft_model, tmp_path, ia3_copy=True)
    assert json.loads((tmp_path / "ia3" / "adapter_config.json").read_text())["peft_type"] == "IA3"
    copy = PeftModel.from_pretrained(tiny_model("llama"), tmp_path, subfolder="ia3")
    assert_same_logits(logits(copy), expected)
    card = (tmp_path / "README.md").read_text()
    assert 'subfolder="ia3"' in card and "KeyError: 'SPARC'" in card and "dampens" in card
    weight_model = tiny_model("llama")
    weight_adapter = hf_sparc.apply_masks(weight_model, masks_for(weight_model, "weight"))
    with pytest.raises(ValueError, match="weight-level"):
        hf_sparc.save_adapter(weight_adapter, tmp_path / "w", ia3_copy=True)
