"""Quantized layers (bitsandbytes-style, here a stand-in class): exact masks allowed, the rest refused."""

from __future__ import annotations

import pytest
import torch
from sparc_fixtures import masks_for, mlp_up_names, tiny_model, tokens
from torch import nn

import hf_sparc
from hf_sparc.tuner.enforce import ZeroingPlan


class Linear8bitLt(nn.Linear):
    """Named like bitsandbytes' 8-bit linear layer (whose weights are int8 codes)."""


def quantized_model():
    model = tiny_model("llama")
    for name in mlp_up_names(model):
        parent, child = name.rsplit(".", 1)
        old = model.get_submodule(name)
        new = Linear8bitLt(old.in_features, old.out_features, bias=old.bias is not None)
        new.load_state_dict(old.state_dict())
        setattr(model.get_submodule(parent), child, new)
    return model


def test_neuron_masks_work_unmerged_and_everything_inexact_is_refused(tokenizer):
    model = quantized_model()
    texts = ["the cat sat on the mat", "a dog ran"]
    # neuron relevance reads activations and gradients, not weight values
    rel = hf_sparc.attribute(model, texts, tokenizer=tokenizer, level="neuron")
    for method, level in (("magnitude", "neuron"), ("wanda", "neuron"), ("lrp", "weight")):
        with pytest.raises(ValueError, match=r"quantized.*dequantize"):
            hf_sparc.attribute(model, texts, tokenizer=tokenizer, method=method, level=level)

    masks = hf_sparc.select(rel, count=5)
    expected = hf_sparc.apply_masks(tiny_model("llama"), masks)  # the same masks, full precision
    peft_model = hf_sparc.apply_masks(model, masks)
    with torch.no_grad():
        torch.testing.assert_close(peft_model(tokens()).logits, expected(tokens()).logits)
    with pytest.raises(ValueError, match="quantized: merging"):
        peft_model.merge_adapter()
    with pytest.raises(ValueError, match="quantized: weight-level"):
        hf_sparc.apply_masks(quantized_model(), masks_for(model, "weight"))
    with pytest.raises(ValueError, match="quantized: its weights cannot be zeroed"):
        ZeroingPlan.build(quantized_model(), masks)
