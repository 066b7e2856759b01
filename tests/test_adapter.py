"""The SPARC PEFT adapter: masking semantics, merge/unmerge, persistence, loaders, exports, bad input."""

from __future__ import annotations

import copy
import json
import os
import re
import warnings
from pathlib import Path

import pytest
import torch
from peft import PeftModel, get_peft_model_state_dict
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from sparc_fixtures import assert_same_logits, masks_for, tiny_model, tokens
from transformers import AutoModelForCausalLM
from transformers.pytorch_utils import Conv1D

import hf_sparc
from hf_sparc import Masks
from hf_sparc.architectures import get_architecture
from hf_sparc.tuner import SparcLayer

ARCHS = ["llama", "opt", "gpt2"]
LEVELS = ["neuron", "head", "weight"]


def logits(model, ids=None):
    with torch.no_grad():
        return model(ids if ids is not None else tokens()).logits


def target_of(model, name: str, level: str) -> str:
    spec = get_architecture(model)
    return name[: -len(spec.attention)] + spec.attention_output if level == "head" else name


def expected_zeros(model, masks: Masks) -> dict[str, torch.Tensor]:
    """Parameter name -> boolean mask of the entries the masks must zero (independent re-derivation)."""
    zeros = {}
    for name, idx in masks.items():
        target = target_of(model, name, masks.level)
        layer = model.get_submodule(target)
        layer = layer.get_base_layer() if hasattr(layer, "get_base_layer") else layer
        conv = isinstance(layer, Conv1D)
        w = torch.zeros_like(layer.weight, dtype=torch.bool)
        if masks.level == "weight":
            w.view(-1)[idx] = True
        elif masks.level == "neuron":
            if conv:
                w[:, idx] = True
            else:
                w[idx, :] = True
            if layer.bias is not None:
                b = torch.zeros_like(layer.bias, dtype=torch.bool)
                b[idx] = True
                zeros[f"{target}.bias"] = b
        else:
            width = (
                layer.weight.shape[0] if conv else layer.weight.shape[1]
            ) // model.config.num_attention_heads
            feats = (idx[:, None] * width + torch.arange(width)).flatten()
            if conv:
                w[feats, :] = True
            else:
                w[:, feats] = True
        zeros[f"{target}.weight"] = w
    return zeros


def plain_params(model) -> dict[str, torch.Tensor]:
    """Parameters by their names in the un-wrapped model."""
    return {n.replace(".base_layer", ""): p.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("level", LEVELS)
def test_masking_merge_unmerge_disable(arch, level):
    model = tiny_model(arch)
    original = plain_params(model)
    base_logits = logits(model)
    masks = masks_for(model, level)
    peft_model = hf_sparc.apply_masks(model, masks)
    base = peft_model.get_base_model()

    # unmerged under autograd: the pruned units output exact zeros whatever the input, weights untouched
    seen, pruned, hooks = {}, {}, []
    for name in masks:
        layer = base.get_submodule(target_of(base, name, level))
        assert isinstance(layer, SparcLayer)
        pruned[name] = layer.features(peft_model.active_adapter)
        if level == "neuron":
            hooks.append(layer.register_forward_hook(lambda m, a, out, n=name: seen.__setitem__(n, out)))
        elif level == "head":
            hooks.append(
                layer.base_layer.register_forward_pre_hook(lambda m, a, n=name: seen.__setitem__(n, a[0]))
            )
    with torch.enable_grad():
        unmerged = peft_model(tokens()).logits.detach()
    for h in hooks:
        h.remove()
    assert len(seen) == (0 if level == "weight" else len(masks))
    for name, value in seen.items():
        assert torch.count_nonzero(value[..., pruned[name]]) == 0
        others = torch.ones(value.shape[-1], dtype=torch.bool)
        others[pruned[name]] = False
        assert torch.count_nonzero(value[..., others]) > 0
        if level == "neuron":
            assert torch.equal(pruned[name], masks[name])
    assert (unmerged - base_logits).abs().max() > 1e-4  # 10x the rounding tolerance or more
    assert all(torch.equal(plain_params(base)[n], original[n]) for n in original)

    # inference (no gradient reaches the weights): neuron and head masks are written into the weights,
    # exactly where merging writes them, and give bit-identical logits; weight masks stay unmerged
    zeros = expected_zeros(base, masks)
    assert torch.equal(logits(peft_model), unmerged) or level == "weight"
    assert_same_logits(logits(peft_model), unmerged)
    for name, value in plain_params(base).items():
        if name in zeros and level != "weight":
            assert torch.count_nonzero(value[zeros[name]]) == 0, name
            assert torch.equal(value[~zeros[name]], original[name][~zeros[name]]), name
        else:
            assert torch.equal(value, original[name]), name
    with torch.enable_grad():  # a training forward puts the originals back first
        assert torch.equal(peft_model(tokens()).logits.detach(), unmerged)
    assert all(torch.equal(plain_params(base)[n], original[n]) for n in original)

    # merged: exact zeros where the masks say, every other parameter bit-identical
    peft_model.merge_adapter()
    zeros = expected_zeros(base, masks)
    merged_params = plain_params(base)
    for name, value in merged_params.items():
        if name in zeros:
            assert torch.count_nonzero(value[zeros[name]]) == 0, name
            assert torch.equal(value[~zeros[name]], original[name][~zeros[name]]), name
        else:
            assert torch.equal(value, original[name]), name
    # one instance throughout: bit-identical where the computation is (cf. assert_same_logits)
    merged = logits(peft_model)
    if level == "weight":  # unmerged subtracts the pruned contributions: equal up to rounding
        assert_same_logits(merged, unmerged)
    else:
        assert torch.equal(merged, unmerged)

    # unmerge restores the exact original values
    peft_model.unmerge_adapter()
    assert all(torch.equal(v, original[n]) for n, v in plain_params(base).items())
    assert torch.equal(logits(peft_model), unmerged)

    with peft_model.disable_adapter():
        assert torch.equal(logits(peft_model), base_logits)
        assert all(torch.equal(v, original[n]) for n, v in plain_params(base).items())
    assert torch.equal(logits(peft_model), unmerged)
    peft_model.unload()  # takes the applied zeros out of the weights it hands back
    assert all(torch.equal(v, original[n]) for n, v in plain_params(base).items())


@pytest.mark.parametrize("arch", ARCHS)
def test_merge_and_unload_gives_plain_pruned_model(arch):
    model = tiny_model(arch)
    masks = masks_for(model, "neuron")
    peft_model = hf_sparc.apply_masks(model, masks)
    unmerged = logits(peft_model)
    plain = peft_model.merge_and_unload()
    assert not any(isinstance(m, SparcLayer) for m in plain.modules())
    assert torch.equal(logits(plain), unmerged)  # the same instance, unwrapped
    for name, zero in expected_zeros(plain, masks).items():
        assert torch.count_nonzero(plain.get_parameter(name)[zero]) == 0


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_weight_level_dense_masks_use_exact_masked_matmul(arch):
    # half of each weight pruned: the masked-copy path, which matches merged bit for bit
    model = tiny_model(arch)
    masks = masks_for(model, "weight", count=masks_for(model, "weight").size() // 2)
    peft_model = hf_sparc.apply_masks(model, masks)
    unmerged = logits(peft_model)
    peft_model.merge_adapter()
    assert torch.equal(logits(peft_model), unmerged)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_sparse_weight_masks_follow_weight_changes_and_partial_merges(arch):
    model = tiny_model(arch)
    a, b = masks_for(model, "weight", seed=1), masks_for(model, "weight", seed=2)
    peft_model = hf_sparc.apply_masks(model, a, adapter_name="a")
    hf_sparc.apply_masks(peft_model, b, adapter_name="b")
    peft_model.base_model.set_adapter(["a", "b"])
    reference = hf_sparc.apply_masks(tiny_model(arch), a.union(b))
    torch.testing.assert_close(logits(peft_model), logits(reference))
    # "a" merged while "b" stays unmerged: the cached correction must see a's zeros
    peft_model.merge_adapter(adapter_names=["a"])
    torch.testing.assert_close(logits(peft_model), logits(reference))
    peft_model.unmerge_adapter()
    # weights changed in place (e.g. by an optimizer step): the correction must follow
    with torch.no_grad():
        for module in (peft_model.get_base_model(), reference.get_base_model()):
            for p in module.parameters():
                p.mul_(1.5)
    torch.testing.assert_close(logits(peft_model), logits(reference))
    reference.merge_adapter()
    torch.testing.assert_close(logits(peft_model), logits(reference))
    # a neuron adapter merged on the same modules zeroes whole rows under the cached correction
    neurons = masks_for(model, "neuron")
    hf_sparc.apply_masks(peft_model, neurons, adapter_name="neurons")
    peft_model.base_model.set_adapter(["a", "b", "neurons"])
    peft_model.merge_adapter(adapter_names=["neurons"])
    outputs = {}
    for name in neurons:
        layer = peft_model.get_base_model().get_submodule(name)
        layer.register_forward_hook(lambda m, a, out, n=name: outputs.__setitem__(n, out))
    logits(peft_model)
    assert all(torch.count_nonzero(outputs[n][..., idx]) == 0 for n, idx in neurons.items())


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("level", LEVELS)
def test_save_load_round_trips_bit_for_bit(arch, level, tmp_path):
    model = tiny_model(arch)
    masks = masks_for(model, level)
    peft_model = hf_sparc.apply_masks(model, masks)
    expected = logits(peft_model)
    peft_model.save_pretrained(tmp_path)

    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["peft_type"] == "SPARC" and config["level"] == level
    # the compact layout: modules grouped by layer template, no per-module entries
    assert sum(sum(layers.values()) for layers in config["modules"].values()) == masks.total()
    assert len(config["fingerprint"]) == 16 and config["shapes"] and "module_counts" not in config
    stored = load_file(tmp_path / "adapter_model.safetensors")
    assert all(t.dtype == torch.int32 for t in stored.values())  # every index fits
    assert sum(t.numel() for t in stored.values()) == masks.total()
    assert (tmp_path / "adapter_model.safetensors").stat().st_size <= 8 * masks.total() + 4096

    loaded = PeftModel.from_pretrained(tiny_model(arch), tmp_path)
    reloaded = get_peft_model_state_dict(loaded)  # the mask indices, bit for bit
    assert reloaded.keys() == stored.keys() and all(torch.equal(reloaded[k], stored[k]) for k in stored)
    assert_same_logits(logits(loaded), expected)


def test_adapter_file_holds_only_indices(tmp_path):
    model = tiny_model("llama", intermediate=256)
    peft_model = hf_sparc.apply_masks(model, masks_for(model, "neuron", count=100))
    peft_model.save_pretrained(tmp_path)
    size = (tmp_path / "adapter_model.safetensors").stat().st_size
    assert 400 <= size <= 400 + 4096  # int32 indices


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_transformers_loaders(arch, tmp_path):
    base_dir, adapter_dir = tmp_path / "base", tmp_path / "adapter"
    tiny_model(arch).save_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir).eval()
    peft_model = hf_sparc.apply_masks(model, masks_for(model, "neuron"))
    expected = logits(peft_model)
    peft_model.save_pretrained(adapter_dir)
    assert json.loads((adapter_dir / "adapter_config.json").read_text())["base_model_name_or_path"] == str(
        base_dir
    )

    auto = AutoModelForCausalLM.from_pretrained(adapter_dir).eval()
    assert any(isinstance(m, SparcLayer) for m in auto.modules())
    assert_same_logits(logits(auto), expected)

    plain = AutoModelForCausalLM.from_pretrained(base_dir).eval()
    plain.load_adapter(adapter_dir, adapter_name="sparc")
    assert_same_logits(logits(plain), expected)


def test_adapter_named_sparc_round_trips_without_warnings(tmp_path):
    model = tiny_model("llama")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        peft_model = hf_sparc.apply_masks(model, masks_for(model, "neuron"), adapter_name="sparc")
        hf_sparc.save_adapter(peft_model, tmp_path)
        loaded = PeftModel.from_pretrained(tiny_model("llama"), tmp_path, adapter_name="sparc")
    assert not [w for w in caught if "prefix" in str(w.message)]
    assert_same_logits(logits(loaded), logits(peft_model))


def test_two_adapters_prune_their_union(tmp_path):
    model = tiny_model("llama")
    detox, norepeat = masks_for(model, "neuron", seed=1), masks_for(model, "neuron", seed=2)
    peft_model = hf_sparc.apply_masks(model, detox, adapter_name="detox")
    hf_sparc.apply_masks(peft_model, norepeat, adapter_name="norepeat")
    assert peft_model.active_adapters == ["norepeat"]
    peft_model.base_model.set_adapter(["detox", "norepeat"])
    both = logits(peft_model)

    union = hf_sparc.apply_masks(tiny_model("llama"), detox.union(norepeat))
    assert_same_logits(both, logits(union))
    peft_model.merge_adapter()
    assert torch.equal(logits(peft_model), both)
    peft_model.unmerge_adapter()
    assert torch.equal(
        plain_params(peft_model.get_base_model())["model.layers.0.mlp.up_proj.weight"],
        plain_params(tiny_model("llama"))["model.layers.0.mlp.up_proj.weight"],
    )

    # each saved on its own, both loadable onto one model again
    peft_model.save_pretrained(tmp_path)
    reloaded = PeftModel.from_pretrained(tiny_model("llama"), tmp_path / "detox", adapter_name="detox")
    reloaded.load_adapter(tmp_path / "norepeat", adapter_name="norepeat")
    reloaded.base_model.set_adapter(["detox", "norepeat"])
    assert_same_logits(logits(reloaded), both)


def test_mixed_levels_on_one_model():
    model = tiny_model("opt")
    peft_model = hf_sparc.apply_masks(model, masks_for(model, "head"), adapter_name="heads")
    hf_sparc.apply_masks(peft_model, masks_for(model, "weight"), adapter_name="weights")
    peft_model.base_model.set_adapter(["heads", "weights"])
    unmerged = logits(peft_model)
    peft_model.merge_adapter()
    torch.testing.assert_close(logits(peft_model), unmerged)


def test_bf16_base_model(tmp_path):
    model = tiny_model("llama", dtype=torch.bfloat16)
    original = plain_params(model)
    masks = masks_for(model, "neuron")
    peft_model = hf_sparc.apply_masks(model, masks)
    unmerged = logits(peft_model)
    assert unmerged.dtype == torch.bfloat16
    peft_model.merge_adapter()
    assert torch.equal(logits(peft_model), unmerged)
    for name, zero in expected_zeros(peft_model.get_base_model(), masks).items():
        assert torch.count_nonzero(plain_params(peft_model.get_base_model())[name][zero]) == 0
    peft_model.unmerge_adapter()
    assert all(torch.equal(v, original[n]) for n, v in plain_params(peft_model.get_base_model()).items())
    peft_model.save_pretrained(tmp_path)
    loaded = PeftModel.from_pretrained(tiny_model("llama", dtype=torch.bfloat16), tmp_path)
    assert_same_logits(logits(loaded), unmerged)


@pytest.mark.parametrize("arch", ARCHS)
def test_export_merged_loads_without_hf_sparc(arch, tmp_path):
    model = tiny_model(arch)
    peft_model = hf_sparc.apply_masks(model, masks_for(model, "head"))
    before = plain_params(peft_model.get_base_model())
    expected = logits(peft_model)  # applies the masks in the weights (inference)
    hf_sparc.export_merged(peft_model, tmp_path)
    plain = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert not any(isinstance(m, SparcLayer) for m in plain.modules())
    assert_same_logits(logits(plain), expected)
    # the PEFT model is back to unmerged, original weights (applied again by the next inference forward)
    assert not any(m.merged for m in peft_model.modules() if isinstance(m, SparcLayer))
    assert all(torch.equal(v, before[n]) for n, v in plain_params(peft_model.get_base_model()).items())
    assert torch.equal(logits(peft_model), expected)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("level", ["neuron", "head"])
def test_export_ia3_matches_sparc_with_plain_peft(arch, level, tmp_path):
    model = tiny_model(arch)
    peft_model = hf_sparc.apply_masks(model, masks_for(model, level))
    expected = logits(peft_model)
    hf_sparc.export_ia3(peft_model, tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["peft_type"] == "IA3"
    # PEFT would only warn and correct a wrong flag; a clean config says GPT-2 stores [in, out]
    assert config["fan_in_fan_out"] is (arch == "gpt2")
    ia3 = PeftModel.from_pretrained(tiny_model(arch), tmp_path)
    assert_same_logits(logits(ia3), expected)


def test_export_ia3_refuses_weight_masks(tmp_path):
    model = tiny_model("llama")
    peft_model = hf_sparc.apply_masks(model, masks_for(model, "weight"))
    with pytest.raises(ValueError, match="weight-level"):
        hf_sparc.export_ia3(peft_model, tmp_path)


# -- bad input ---------------------------------------------------------------------------------


def assert_untouched(model, reference_params):
    assert not any(isinstance(m, SparcLayer) for m in model.modules())
    assert not hasattr(model, "peft_config")
    assert all(torch.equal(v, reference_params[n]) for n, v in plain_params(model).items())


@pytest.fixture
def saved_llama_adapter(tmp_path):
    model = tiny_model("llama")
    peft_model = hf_sparc.apply_masks(model, masks_for(model, "neuron"))
    peft_model.save_pretrained(tmp_path / "adapter")
    return tmp_path / "adapter", logits(peft_model)


@pytest.mark.parametrize(
    ("other", "pattern"),
    [
        (lambda: tiny_model("opt"), r"model\.layers\.0\.mlp\.up_proj is missing"),
        (
            lambda: tiny_model("llama", intermediate=48),
            r"expects weight shape \[64, 32\], model has \[48, 32\]",
        ),
    ],
)
def test_adapter_for_another_model_is_refused_before_modifying(saved_llama_adapter, other, pattern):
    adapter_dir, _ = saved_llama_adapter
    model = other()
    reference = plain_params(model)
    with pytest.raises(ValueError, match=pattern):
        PeftModel.from_pretrained(model, adapter_dir)
    assert_untouched(model, reference)
    with pytest.raises(ValueError, match=pattern):
        model.load_adapter(adapter_dir)
    assert_untouched(model, reference)


def test_second_adapter_for_another_model_is_refused(saved_llama_adapter, tmp_path):
    small = tiny_model("llama", intermediate=48)
    hf_sparc.apply_masks(small, masks_for(small, "neuron")).save_pretrained(tmp_path / "small")
    adapter_dir, expected = saved_llama_adapter
    peft_model = PeftModel.from_pretrained(tiny_model("llama"), adapter_dir)
    with pytest.raises(ValueError, match=r"expects weight shape \[48, 32\], model has \[64, 32\]"):
        peft_model.load_adapter(tmp_path / "small", adapter_name="small")
    assert list(peft_model.peft_config) == ["default"]
    assert_same_logits(logits(peft_model), expected)


def test_masks_for_another_model_are_refused(saved_llama_adapter):
    masks = masks_for(tiny_model("llama", intermediate=48), "neuron")
    model = tiny_model("llama")
    reference = plain_params(model)
    with pytest.raises(ValueError, match=r"up_proj were selected for shape \(48,\).*\(64,\)"):
        hf_sparc.apply_masks(model, masks)
    assert_untouched(model, reference)
    with pytest.raises(ValueError, match="does not have"):
        hf_sparc.apply_masks(
            model,
            Masks(
                "neuron",
                {"model.layers.5.mlp.up_proj": torch.tensor([1])},
                {"model.layers.5.mlp.up_proj": (64,)},
            ),
        )
    assert_untouched(model, reference)


@pytest.mark.parametrize(
    ("indices", "pattern"),
    [
        ([1, 64], "out of range"),
        ([-3, 1], "out of range"),
        ([5, 2], "unsorted"),
        ([2, 2], "duplicated"),
    ],
)
def test_bad_indices_in_file_are_refused(saved_llama_adapter, indices, pattern):
    adapter_dir, _ = saved_llama_adapter
    path = adapter_dir / "adapter_model.safetensors"
    state = load_file(path)
    key = next(iter(state))
    n = state[key].numel()
    state[key] = torch.tensor(indices + list(range(10, 10 + n - len(indices))), dtype=torch.int64)
    save_file(state, path)
    with pytest.raises(ValueError, match=pattern):
        PeftModel.from_pretrained(tiny_model("llama"), adapter_dir)
    with pytest.raises(ValueError, match=pattern):
        _load_adapter_and_run(adapter_dir)


def _load_adapter_and_run(adapter_dir):
    model = tiny_model("llama")
    model.load_adapter(adapter_dir)
    return model(tokens())


def test_float_or_missing_indices_are_refused(saved_llama_adapter):
    adapter_dir, _ = saved_llama_adapter
    path = adapter_dir / "adapter_model.safetensors"
    state = load_file(path)
    key = next(iter(state))
    save_file({**state, key: state[key].float()}, path)
    with pytest.raises(ValueError, match="integers"):
        PeftModel.from_pretrained(tiny_model("llama"), adapter_dir)
    del state[key]
    save_file(state, path)
    with pytest.raises(ValueError, match="never loaded"):
        PeftModel.from_pretrained(tiny_model("llama"), adapter_dir)
    with pytest.raises(ValueError, match="never loaded"):
        _load_adapter_and_run(adapter_dir)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "delete_weights", "delete_config", "bad_json"])
def test_damaged_adapter_dir_gives_clean_error(saved_llama_adapter, damage):
    adapter_dir, _ = saved_llama_adapter
    weights, config = adapter_dir / "adapter_model.safetensors", adapter_dir / "adapter_config.json"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:-30])
    elif damage == "garbage":
        weights.write_bytes(b"\x00" * 64)
    elif damage == "delete_weights":
        weights.unlink()
    elif damage == "delete_config":
        config.unlink()
    else:
        config.write_text(config.read_text()[:40])
    message = "not a readable safetensors" if damage in ("truncate", "garbage") else None
    with pytest.raises((ValueError, OSError), match=message):
        PeftModel.from_pretrained(tiny_model("llama"), adapter_dir)
    # transformers' loader reports damaged files with safetensors' own error type
    with pytest.raises((ValueError, OSError, SafetensorError)):
        tiny_model("llama").load_adapter(adapter_dir)


def test_tampered_config_is_refused(saved_llama_adapter):
    adapter_dir, _ = saved_llama_adapter
    config_path = adapter_dir / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["shapes"]["model.layers.{}.mlp.up_proj"] = [64, 16]
    config_path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match="fingerprint does not match"):
        PeftModel.from_pretrained(tiny_model("llama"), adapter_dir)


def test_pickled_adapter_is_never_unpickled(saved_llama_adapter, monkeypatch):
    adapter_dir, _ = saved_llama_adapter
    state = load_file(adapter_dir / "adapter_model.safetensors")
    torch.save(state, adapter_dir / "adapter_model.bin")
    os.remove(adapter_dir / "adapter_model.safetensors")

    def no_pickle(*args, **kwargs):
        raise AssertionError("torch.load was called")

    monkeypatch.setattr(torch, "load", no_pickle)
    with pytest.raises(FileNotFoundError, match="safetensors only"):
        PeftModel.from_pretrained(tiny_model("llama"), adapter_dir)
    # transformers' loaders only look for adapter_model.safetensors (an AssertionError would mean unpickling)
    with pytest.raises(OSError, match=r"adapter_model\.safetensors"):
        tiny_model("llama").load_adapter(adapter_dir)


def test_save_pretrained_overwrites_like_peft_and_writes_the_sparc_card(tmp_path):
    model = tiny_model("llama")
    first = hf_sparc.apply_masks(model, masks_for(model, "neuron", seed=1))
    first.save_pretrained(tmp_path)
    first.save_pretrained(tmp_path)  # trainer.save_model() twice: PEFT replaces, so do we
    card = (tmp_path / "README.md").read_text()
    assert "hf_sparc" in card.split("---")[1] and "More Information Needed" not in card
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    other = tiny_model("llama")
    second = hf_sparc.apply_masks(other, masks_for(other, "neuron", seed=2))
    with pytest.raises(FileExistsError, match="already holds an adapter"):
        second.save_pretrained(tmp_path, overwrite=False)
    with pytest.raises(FileExistsError, match="already holds an adapter"):
        hf_sparc.save_adapter(second, tmp_path)  # hf_sparc's own writer refuses unless asked
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before

    # the save follows copies of the model, and saves the copy, not the original
    duplicate = copy.deepcopy(second)
    assert duplicate.save_pretrained.__self__ is duplicate
    duplicate.save_pretrained(tmp_path)
    assert (tmp_path / "adapter_model.safetensors").read_bytes() != before["adapter_model.safetensors"]
    loaded = PeftModel.from_pretrained(tiny_model("llama"), tmp_path)
    assert_same_logits(logits(loaded), logits(second))

    # someone else's README is kept
    (tmp_path / "README.md").write_text("my notes")
    second.save_pretrained(tmp_path)
    assert (tmp_path / "README.md").read_text() == "my notes"


def test_model_card_front_matter_names_hub_base_model():
    model = tiny_model("llama")
    model.name_or_path = "org/tiny-llama"
    peft_model = hf_sparc.apply_masks(model, masks_for(model, "weight"))
    card = hf_sparc.model_card(peft_model, repo_id="me/tiny-llama-pruned")
    assert card.data.base_model == "org/tiny-llama" and card.data.library_name == "peft"
    assert "hf_sparc" in card.data.tags
    assert "40 weights" in card.text and 'from_pretrained("me/tiny-llama-pruned")' in card.text
    assert "select(keep='highest', scope='global', count=40)" in card.text
    assert (
        "| `model.layers.0.mlp.up_proj` |" in card.text and "| **total** | 40 | 4096 | 0.977% |" in card.text
    )


def test_save_adapter_keeps_an_existing_readme(tmp_path):
    (tmp_path / "README.md").write_text("my notes")
    model = tiny_model("llama")
    hf_sparc.save_adapter(hf_sparc.apply_masks(model, masks_for(model, "neuron")), tmp_path)
    assert (tmp_path / "README.md").read_text() == "my notes"
    assert (tmp_path / "adapter_model.safetensors").exists()


def test_save_adapter_writes_named_adapter_at_top_with_card(tmp_path):
    model = tiny_model("gpt2")
    masks = masks_for(model, "head")
    peft_model = hf_sparc.apply_masks(model, masks, adapter_name="detox")
    hf_sparc.save_adapter(peft_model, tmp_path, metrics={"toxicity": 0.25})
    card = (tmp_path / "README.md").read_text()
    assert re.search(r"^library_name: peft$", card, re.M)
    assert "hf_sparc" in card and "3 attention heads" in card and "toxicity" in card
    assert "pip install hf-sparc" in card and "import hf_sparc" in card and "from_pretrained" in card
    loaded = PeftModel.from_pretrained(tiny_model("gpt2"), tmp_path)
    assert_same_logits(logits(loaded), logits(peft_model))


def test_card_front_matter_has_license_datasets_and_eval_results_and_a_before_after_table():
    model = tiny_model("llama")
    model.name_or_path = "org/tiny-llama"
    peft_model = hf_sparc.apply_masks(model, masks_for(model, "neuron"))
    card = hf_sparc.model_card(
        peft_model, repo_id="me/detox", metrics={"toxic_rate": 0.15}, metrics_before={"toxic_rate": 0.23},
        license="apache-2.0", datasets=["allenai/real-toxicity-prompts"],
    )  # fmt: skip
    assert card.data.license == "apache-2.0" and card.data.datasets == ["allenai/real-toxicity-prompts"]
    (result,) = card.data.eval_results
    assert (result.metric_type, result.metric_value) == ("toxic_rate", 0.15)
    assert "| toxic_rate | 0.23 | 0.15 |" in card.text
    assert "arXiv:2506.13727" in card.text and "hf_sparc" in card.text and "Made with" in card.text
    peft_model.peft_config["default"].provenance["method"] = "(lrp) - (lrp)"
    assert "lrp, contrastive: general minus undesired" in hf_sparc.model_card(peft_model).text


def test_transformers_adapter_api_with_this_peft(tmp_path):
    """What transformers' adapter methods do on a model with a SPARC adapter loaded through
    ``load_adapter``: with peft < 0.22 (the newest on PyPI here) transformers refuses them with its
    version message; with peft >= 0.22 they must switch the masks off and on (README, "Masks and the
    adapter")."""
    from packaging.version import Version
    from peft import __version__ as peft_version

    model = tiny_model("llama")
    peft_model = hf_sparc.apply_masks(model, masks_for(model, "neuron"))
    masked = logits(peft_model)
    hf_sparc.save_adapter(peft_model, tmp_path)
    plain = tiny_model("llama")
    unmasked = logits(plain)
    plain.load_adapter(tmp_path, adapter_name="sparc")
    assert_same_logits(logits(plain), masked)  # load_adapter works with any supported PEFT
    calls = (
        lambda: plain.set_adapter("sparc"),
        plain.disable_adapters,
        plain.enable_adapters,
        plain.active_adapters,
    )
    if Version(peft_version) < Version("0.22.0"):
        for call in calls:
            with pytest.raises((ImportError, ValueError), match=r"0\.22"):
                call()
        return
    plain.set_adapter("sparc")
    assert plain.active_adapters() == ["sparc"]
    plain.disable_adapters()
    assert_same_logits(logits(plain), unmasked)
    plain.enable_adapters()
    assert_same_logits(logits(plain), masked)


@pytest.mark.parametrize("level", ["neuron", "head"])
def test_adapters_written_in_the_per_module_layout_still_load(level, tmp_path):
    # written by hf_sparc 0.1.0 before the compact config (tests/fixtures/adapter_v0_1_0; head: soft 0.5)
    folder = Path(__file__).parent / "fixtures" / "adapter_v0_1_0" / level
    assert "module_counts" in json.loads((folder / "adapter_config.json").read_text())
    model = tiny_model("llama")
    masks = masks_for(model, level)
    masks = masks.dampened(0.5) if level == "head" else masks
    expected = logits(hf_sparc.apply_masks(model, masks))

    loaded = PeftModel.from_pretrained(tiny_model("llama"), folder)
    assert torch.equal(logits(loaded), expected)
    plain = tiny_model("llama")
    plain.load_adapter(str(folder))  # transformers' own loader
    assert torch.equal(logits(plain), expected)
    # saved again, it is written in the compact layout and loads to the same model
    hf_sparc.save_adapter(loaded, tmp_path)
    assert "modules" in json.loads((tmp_path / "adapter_config.json").read_text())
    assert torch.equal(logits(PeftModel.from_pretrained(tiny_model("llama"), tmp_path)), expected)
