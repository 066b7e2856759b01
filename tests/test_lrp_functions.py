"""hf_sparc's own LRP rule functions: equal to lxt's (the oracle) in float32, correct in float16."""

from __future__ import annotations

import pytest
import torch
from conftest import TEXTS, lxt_oracle, make_model

import hf_sparc
from hf_sparc.attribution.lrp import functions


def inputs() -> torch.Tensor:
    x = torch.randn(4, 7, 16, generator=torch.Generator().manual_seed(0))
    x[0, 0, :3] = 0.0  # zero inputs: the identity rule's ratio needs its epsilon here
    return x


@pytest.mark.parametrize("fn", [torch.nn.functional.silu, torch.nn.functional.gelu, torch.tanh])
def test_rule_functions_equal_lxt_bit_for_bit(fn):
    lxt = lxt_oracle()
    upstream = torch.randn(4, 7, 16, generator=torch.Generator().manual_seed(1))
    grads = []
    for identity, divide in ((functions.identity_rule, functions.divide_gradient),
                             (lxt.identity_rule_implicit, lxt.divide_gradient)):  # fmt: skip
        x = inputs().requires_grad_()
        out = divide(identity(fn, x), 3)
        (grad,) = torch.autograd.grad(out, x, upstream)
        grads.append((out.detach(), grad))
    assert torch.equal(grads[0][0], grads[1][0]) and torch.equal(grads[0][1], grads[1][1])
    x = inputs().requires_grad_()
    assert functions.stop_gradient(x).requires_grad is False and lxt.stop_gradient(x).requires_grad is False


def test_model_relevance_equals_relevance_with_lxts_functions(tokenizer, monkeypatch):
    lxt = lxt_oracle()
    model = make_model("llama")
    ours = hf_sparc.attribute(model, TEXTS, tokenizer=tokenizer, level="weight")
    from hf_sparc.attribution.lrp import rules

    monkeypatch.setattr(rules, "identity_rule", lxt.identity_rule_implicit)
    monkeypatch.setattr(rules, "divide_gradient", lxt.divide_gradient)
    reference = hf_sparc.attribute(model, TEXTS, tokenizer=tokenizer, level="weight")
    assert all(torch.equal(ours[name], reference[name]) for name in ours)


def test_fp16_model_gives_finite_relevance_close_to_fp32(tokenizer):
    model = make_model("llama")
    reference = hf_sparc.attribute(model, TEXTS, tokenizer=tokenizer, level="neuron")
    half = hf_sparc.attribute(model.half(), TEXTS, tokenizer=tokenizer, level="neuron")
    for name in reference:
        assert bool(torch.isfinite(half[name]).all()), name
        cosine = torch.nn.functional.cosine_similarity(half[name].float(), reference[name], dim=0)
        assert cosine > 0.99, (name, float(cosine))


def test_identity_rule_ratio_is_formed_in_fp32_for_half_inputs():
    x = torch.zeros(3, dtype=torch.float16, requires_grad=True)
    (grad,) = torch.autograd.grad(
        functions.identity_rule(torch.nn.functional.silu, x), x, torch.ones(3, dtype=torch.float16)
    )
    assert grad.dtype == torch.float16 and bool(torch.isfinite(grad).all())
