"""``lrp-l2`` (root of the summed squares of per-token relevance), ``lrp-wanda`` and ``next_token_logprob``,
checked against relevance pieces read token by token from the model under AttnLRP."""

from __future__ import annotations

import pytest
import torch
from conftest import TEXTS, make_model

import hf_sparc
from hf_sparc.architectures import get_architecture
from hf_sparc.attribution import lrp_rules
from hf_sparc.attribution.sites import hook_unit_site
from hf_sparc.workflows.compression import weight_relevance

MODULE = "model.layers.1.mlp.up_proj"


def _pieces(model, tokenizer, level: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per text (alone, so no padding): the activations ``[tokens, features]`` read at ``MODULE``
    (its input for ``weight``, its unit site for ``neuron``) and the AttnLRP-modified gradients of
    the explained output (Σ of the following tokens' logits) there (its output for ``weight``)."""
    pieces, current = [], {}

    def keep(key, tensor):
        current[key] = tensor.detach()[0]

    def on_site(site):
        keep("value", site)
        site.register_hook(lambda grad: keep("grad", grad))

    def on_module(_module, inputs, output):
        keep("value", inputs[0])
        output.register_hook(lambda grad: keep("grad", grad))

    module = model.get_submodule(MODULE)
    if level == "weight":
        handle = module.register_forward_hook(on_module)
    else:
        handle = hook_unit_site(model, get_architecture(model), level, MODULE, on_site)
    with lrp_rules(model, "lrp"):
        for text in TEXTS:
            ids = tokenizer(text, return_tensors="pt")["input_ids"]
            logits = model(input_ids=ids).logits[0, :-1]
            logits.gather(1, ids[0, 1:, None]).sum().backward()
            pieces.append((current["value"].double(), current["grad"].double()))
    handle.remove()
    return pieces


@pytest.mark.parametrize("level", ["weight", "neuron"])
def test_l2_relevance_is_the_root_mean_square_over_samples_of_per_token_relevance(tokenizer, level):
    model = make_model("llama")
    pieces = _pieces(model, tokenizer, level)
    n, common = len(TEXTS), dict(tokenizer=tokenizer, level=level, target_modules=["mlp.up_proj"])
    if level == "weight":
        weight = model.get_submodule(MODULE).weight.detach().double()
        signed = weight * sum(g.T @ x for x, g in pieces) / n
        l2 = weight.abs() * (sum(g.square().T @ x.square() for x, g in pieces) / n).sqrt()
    else:
        signed = sum((x * g).sum(0) for x, g in pieces) / n
        l2 = (sum((x * g).square().sum(0) for x, g in pieces) / n).sqrt()
    # the pieces are right: their sum is Eq. 8's (and Eq. 1's) relevance, which tests elsewhere pin
    lrp = hf_sparc.attribute(model, TEXTS, method="lrp", batch_size=3, **common)[MODULE]
    torch.testing.assert_close(lrp.double(), signed, rtol=1e-4, atol=1e-7)
    result = hf_sparc.attribute(model, TEXTS, method="lrp-l2", batch_size=3, **common)
    torch.testing.assert_close(result[MODULE].double(), l2, rtol=1e-4, atol=1e-7)
    assert not torch.allclose(result[MODULE].double(), signed.abs(), rtol=1e-2)
    if level == "weight":  # √(Σₜ |R_t|·|C_t| / n), C_t = w·x_t the weight's contribution at t
        blend = weight.abs() * (sum(g.abs().T @ x.square() for x, g in pieces) / n).sqrt()
        result = hf_sparc.attribute(model, TEXTS, method="lrp-wanda", batch_size=3, **common)
        torch.testing.assert_close(result[MODULE].double(), blend, rtol=1e-4, atol=1e-7)


def test_l2_relevance_does_not_depend_on_the_batching(tokenizer):
    model = make_model("llama")
    one, three = (
        hf_sparc.attribute(model, TEXTS, tokenizer=tokenizer, method="lrp-l2", level="weight", batch_size=b)
        for b in (1, 3)
    )
    for name in one:
        torch.testing.assert_close(one[name], three[name], rtol=1e-5, atol=0)


def test_logprob_objective_explains_the_following_tokens_log_probabilities(tokenizer):
    model = make_model("llama")
    expected = []
    for text in TEXTS:
        ids = tokenizer(text, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, :-1].double()
        expected.append(float(logits.log_softmax(-1).gather(1, ids[0, 1:, None]).sum()))
    common = dict(tokenizer=tokenizer, method="lrp", level="neuron", batch_size=3)
    rel = hf_sparc.attribute(model, TEXTS, objective="next_token_logprob", **common)
    torch.testing.assert_close(torch.tensor(rel.info.outputs), torch.tensor(expected), rtol=1e-5, atol=1e-5)
    logits = hf_sparc.attribute(model, TEXTS, **common)
    assert not torch.allclose(rel[MODULE], logits[MODULE], rtol=1e-2)


def test_compression_passes_the_objective_to_lrp_methods_only(tokenizer):
    model = make_model("llama")
    common = dict(progress=False, target_modules=["up_proj"])
    for method, changes in (("lrp-l2", True), ("wanda", False)):
        plain = weight_relevance(model, tokenizer, TEXTS, method, **common)[MODULE]
        logprob = weight_relevance(model, tokenizer, TEXTS, method, objective="next_token_logprob", **common)
        assert torch.equal(plain, logprob[MODULE]) is not changes, method
