"""The LRP attribution engine: conservation, consistency, scoping, invariances, baselines."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import CONFIGS, TEXTS, lxt_oracle, make_model

import hf_sparc
from hf_sparc.attribution import METHODS, lrp_rules


def _target_logit_sums(model, tokenizer, texts, centered: bool = False):
    """Σ_t logit[t, y_{t+1}] per text (``centered``: minus the mean logit at t), from a plain
    forward of the unpatched model."""
    sums = []
    for text in texts:
        ids = tokenizer(text, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, :-1].double()
        targets = logits.gather(1, ids[0, 1:, None])[:, 0]
        sums.append(float((targets - logits.mean(-1) if centered else targets).sum()))
    return torch.tensor(sums, dtype=torch.double)


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("arch", ["llama", "opt", "gpt2", "gemma3"])
def test_cp_lrp_token_relevance_sums_to_explained_logits(arch, tokenizer):
    kwargs = {"enable_bias": False} if arch == "opt" else {}
    model = make_model(arch, **kwargs)
    with torch.no_grad():  # bias-free: every bias (incl. LayerNorm's) is zero
        for name, parameter in model.named_parameters():
            if name.endswith("bias"):
                parameter.zero_()
    rel = hf_sparc.attribute(model, TEXTS, tokenizer=tokenizer, method="cp-lrp", level="token")
    totals = torch.stack([t.sum() for t in rel.per_text()]).double()
    expected = _target_logit_sums(model, tokenizer, TEXTS).double()
    assert _relative_error(torch.tensor(rel.info.outputs, dtype=torch.double), expected) < 1e-5
    assert _relative_error(totals, expected) < 1e-4
    assert [len(t) for t in rel.per_text()] == [len(tokenizer(t)["input_ids"]) for t in TEXTS]


def test_conservation_fails_for_plain_gradient(tokenizer):
    """Guards the test above: Gradient×Input is not conservative, so the check can fail."""
    model = make_model("llama")
    rel = hf_sparc.attribute(model, TEXTS, tokenizer=tokenizer, method="gradient", level="token")
    totals = torch.stack([t.sum() for t in rel.per_text()]).double()
    assert _relative_error(totals, torch.tensor(rel.info.outputs, dtype=torch.double)) > 1e-2


def test_centered_next_token_objective_explains_logit_minus_mean_logit(tokenizer):
    model = make_model("llama")
    rel = hf_sparc.attribute(
        model, TEXTS, tokenizer=tokenizer, method="cp-lrp", level="token", objective="next_token_centered"
    )
    expected = _target_logit_sums(model, tokenizer, TEXTS, centered=True)
    assert _relative_error(torch.tensor(rel.info.outputs, dtype=torch.double), expected) < 1e-5
    totals = torch.stack([t.sum() for t in rel.per_text()]).double()
    assert _relative_error(totals, expected) < 1e-4
    plain = _target_logit_sums(model, tokenizer, TEXTS)
    assert _relative_error(expected, plain) > 1e-2  # the centring changes what is explained


def test_last_token_max_objective_is_conserved(tokenizer):
    model = make_model("llama")
    rel = hf_sparc.attribute(
        model, TEXTS, tokenizer=tokenizer, method="cp-lrp", level="token", objective="last_token_max"
    )
    expected = []
    for text in TEXTS:
        with torch.no_grad():
            expected.append(float(model(**tokenizer(text, return_tensors="pt")).logits[0, -1].max()))
    totals = torch.stack([t.sum() for t in rel.per_text()]).double()
    assert _relative_error(totals, torch.tensor(expected, dtype=torch.double)) < 1e-4


def test_prompt_continuation_explains_only_the_continuation(tokenizer):
    model = make_model("llama")
    pairs = [
        {"prompt": "the cat sat", "continuation": "on the mat"},
        {"prompt": "hello", "continuation": "world"},
    ]
    rel = hf_sparc.attribute(model, pairs, tokenizer=tokenizer, method="cp-lrp", level="token")
    assert rel.info.n_tokens == 3 + 1
    for pair, output in zip(pairs, rel.info.outputs, strict=True):
        ids = tokenizer(pair["prompt"] + " " + pair["continuation"], return_tensors="pt")["input_ids"]
        n_prompt = len(tokenizer(pair["prompt"])["input_ids"])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0]
        expected = logits[n_prompt - 1 : -1].gather(1, ids[0, n_prompt:, None]).sum()
        assert output == pytest.approx(float(expected), rel=1e-5)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize("absolute", [False, True])
def test_weight_relevance_sums_to_output_relevance(arch, absolute, tokenizer):
    """For a bias-free projection, Σ_inputs R_w = R at its outputs (signed: exactly the same
    quantity; absolute: |R| per token of the rank-1 contributions bounds the neuron's |R|)."""
    model = make_model(arch)
    module = "model.layers.1.mlp.up_proj" if arch == "llama" else "transformer.h.1.mlp.c_fc"
    common = dict(
        tokenizer=tokenizer, method="lrp", target_modules=[module.split(".", 1)[1]], absolute=absolute
    )
    weights = hf_sparc.attribute(model, TEXTS, level="weight", **common)[module]
    neurons = hf_sparc.attribute(model, TEXTS, level="neuron", **common)[module]
    summed = weights.sum(0) if arch == "gpt2" else weights.sum(1)
    if absolute:
        assert torch.all(summed >= neurons - 1e-6)
    else:
        torch.testing.assert_close(summed, neurons, rtol=1e-4, atol=1e-6)


def test_head_relevance_equals_relevance_of_the_heads_output_slices(tokenizer):
    model = make_model("llama")
    heads = hf_sparc.attribute(model, TEXTS, tokenizer=tokenizer, method="lrp", level="head")
    o_proj = hf_sparc.attribute(
        model, TEXTS, tokenizer=tokenizer, method="lrp", level="weight", target_modules=["o_proj"]
    )
    for layer in range(2):
        per_input = o_proj[f"model.layers.{layer}.self_attn.o_proj"].sum(0)
        torch.testing.assert_close(
            heads[f"model.layers.{layer}.self_attn"], per_input.view(4, -1).sum(-1), rtol=1e-4, atol=1e-6
        )


def test_zeroed_units_get_exactly_zero_relevance(tokenizer):
    model = make_model("llama")
    up = model.model.layers[0].mlp.up_proj
    with torch.no_grad():
        up.weight[[3, 7]] = 0.0
        up.weight[10, 5] = 0.0
    name = "model.layers.0.mlp.up_proj"
    for method in ("lrp", "cp-lrp", "gradient"):
        neurons = hf_sparc.attribute(model, TEXTS, tokenizer=tokenizer, method=method)[name]
        assert neurons[3] == 0.0 and neurons[7] == 0.0 and neurons.abs().sum() > 0
        weights = hf_sparc.attribute(model, TEXTS, tokenizer=tokenizer, method=method, level="weight")[name]
        assert torch.all(weights[[3, 7]] == 0.0) and weights[10, 5] == 0.0 and weights[10].abs().sum() > 0


def test_lrp_rules_match_lxt_placement_on_eager_attention(tokenizer):
    """hf_sparc scales q/k/v gradients instead of patching attention; it must equal lxt's
    placement of the uniform rule on the two attention matmuls (reference implementation)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask
    from transformers.models.llama.modeling_llama import repeat_kv

    rules = lxt_oracle()

    def reference_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
        key, value = (
            repeat_kv(key, module.num_key_value_groups),
            repeat_kv(value, module.num_key_value_groups),
        )
        scores = rules.divide_gradient(torch.matmul(query, key.transpose(2, 3)) * scaling, 2)
        if attention_mask is not None:
            scores = scores + attention_mask
        weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
        output = rules.divide_gradient(torch.matmul(weights, value), 2)
        return output.transpose(1, 2).contiguous(), weights

    AttentionInterface.register("test_lxt_reference", reference_attention)
    AttentionMaskInterface.register("test_lxt_reference", eager_mask)  # else no causal mask is built
    hf_sparc_model = make_model("llama", attn_implementation="sdpa")
    rel = hf_sparc.attribute(hf_sparc_model, TEXTS, tokenizer=tokenizer, method="lrp", level="token")

    reference = make_model("llama", attn_implementation="eager")
    reference.config._attn_implementation = "test_lxt_reference"
    ids = tokenizer(TEXTS[0], return_tensors="pt")["input_ids"]
    with lrp_rules(reference) as base:
        # Remove hf_sparc's own q/k/v scaling: the reference attention applies the rules itself.
        for layer in base.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                proj._forward_hooks.clear()
        embeddings = base.model.embed_tokens(ids).detach().requires_grad_()
        logits = base(inputs_embeds=embeddings).logits[0]
        target = logits[:-1].gather(1, ids[0, 1:, None]).sum()
        (grad,) = torch.autograd.grad(target, embeddings)
    expected = (embeddings * grad).sum(-1)[0].detach()
    torch.testing.assert_close(rel.per_text()[0], expected, rtol=1e-4, atol=1e-5)


def test_scoping_restores_model_and_leaves_other_instances_alone(tokenizer):
    model, other = make_model("llama", seed=0), make_model("llama", seed=1)
    ids = tokenizer(TEXTS[0], return_tensors="pt")["input_ids"]

    def input_gradient(m):
        embeddings = m.model.embed_tokens(ids).detach().requires_grad_()
        logits = m(inputs_embeds=embeddings).logits
        return logits.detach(), torch.autograd.grad(logits[0, -1].max(), embeddings)[0]

    classes_before = {type(m): type(m).forward for m in model.modules()}
    before, other_before = input_gradient(model), input_gradient(other)
    with lrp_rules(model):
        patched = input_gradient(model)
        other_during = input_gradient(other)
    assert torch.equal(patched[0], before[0])  # forward unchanged by the rules
    assert not torch.allclose(patched[1], before[1])  # ... but the backward is modified
    for got, expected in zip(other_during + input_gradient(model), other_before + before, strict=True):
        assert torch.equal(got, expected)
    assert {type(m): type(m).forward for m in model.modules()} == classes_before
    assert all("forward" not in m.__dict__ and not m._forward_hooks for m in model.modules())

    with pytest.raises(RuntimeError, match="boom"), lrp_rules(model):
        raise RuntimeError("boom")
    assert all("forward" not in m.__dict__ and not m._forward_hooks for m in model.modules())
    assert torch.equal(input_gradient(model)[1], before[1])


def test_attribute_restores_training_mode_and_requires_grad(tokenizer):
    model = make_model("llama").train()
    model.model.layers[0].mlp.up_proj.weight.requires_grad_(False)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    hf_sparc.attribute(model, TEXTS, tokenizer=tokenizer)
    assert model.training and all(m.training for m in model.modules())
    assert flags == {n: p.requires_grad for n, p in model.named_parameters()}
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("level", ["neuron", "head", "weight", "token"])
def test_batch_size_does_not_change_relevance(level, tokenizer):
    model = make_model("llama")
    one = hf_sparc.attribute(model, TEXTS, tokenizer=tokenizer, level=level, batch_size=1)
    eight = hf_sparc.attribute(model, TEXTS, tokenizer=tokenizer, level=level, batch_size=8)
    for name in one:
        torch.testing.assert_close(eight[name], one[name], rtol=1e-5, atol=1e-7)


def test_same_seed_same_result_and_random_depends_on_seed(tokenizer):
    model = make_model("llama")
    for method in ("lrp", "random"):
        a = hf_sparc.attribute(model, TEXTS, tokenizer=tokenizer, method=method, seed=3)
        b = hf_sparc.attribute(model, TEXTS, tokenizer=tokenizer, method=method, seed=3)
        assert all(torch.equal(a[n], b[n]) for n in a)
    c = hf_sparc.attribute(model, None, method="random", seed=4)
    assert not all(torch.equal(a[n], c[n]) for n in a)


def test_wanda_matches_hand_computation(tokenizer):
    model = make_model("llama")
    module = model.model.layers[1].mlp.down_proj
    inputs = []
    handle = module.register_forward_pre_hook(lambda _m, args: inputs.append(args[0][0].detach()))
    with torch.no_grad():
        for text in TEXTS:
            model(**tokenizer(text, return_tensors="pt"))
    handle.remove()
    tokens = torch.cat(inputs)
    norms = tokens.pow(2).sum(0).sqrt() / tokens.shape[0] ** 0.5  # per token: the input's RMS
    expected = module.weight.detach().abs() * norms
    rel = hf_sparc.attribute(model, TEXTS, tokenizer=tokenizer, method="wanda", level="weight", batch_size=3)
    torch.testing.assert_close(rel["model.layers.1.mlp.down_proj"], expected, rtol=1e-5, atol=1e-7)
    neurons = hf_sparc.attribute(
        model, TEXTS, tokenizer=tokenizer, method="wanda", level="neuron", target_modules=["down_proj"]
    )
    # structured Wanda: a unit's score is the sum of the Wanda scores of the weights producing it
    torch.testing.assert_close(neurons["model.layers.1.mlp.down_proj"], expected.sum(1), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("level", ["neuron", "weight"])
def test_wanda_scores_do_not_grow_with_repeated_texts(tokenizer, level):
    # contrastive Wanda compares two reference sets: the set with more tokens must not win by size
    model = make_model("llama")
    once = hf_sparc.attribute(model, TEXTS, tokenizer=tokenizer, method="wanda", level=level)
    four_times = hf_sparc.attribute(model, TEXTS * 4, tokenizer=tokenizer, method="wanda", level=level)
    assert four_times.info.n_tokens == 4 * once.info.n_tokens
    for name in once:
        torch.testing.assert_close(four_times[name], once[name], rtol=1e-5, atol=1e-7)


def test_gradient_neuron_relevance_matches_autograd(tokenizer):
    model = make_model("llama")
    module = model.model.layers[0].mlp.up_proj
    total = torch.zeros(module.out_features)
    for text in TEXTS:
        ids = tokenizer(text, return_tensors="pt")["input_ids"]
        captured = {}
        handle = module.register_forward_hook(
            lambda _m, _i, out, store=captured: store.setdefault("out", out)
        )
        logits = model(input_ids=ids).logits[0]
        handle.remove()
        target = logits[:-1].gather(1, ids[0, 1:, None]).sum()
        (grad,) = torch.autograd.grad(target, captured["out"])
        total += (captured["out"] * grad)[0].sum(0).detach()
    rel = hf_sparc.attribute(model, TEXTS, tokenizer=tokenizer, method="gradient")
    torch.testing.assert_close(rel["model.layers.0.mlp.up_proj"], total / len(TEXTS), rtol=1e-4, atol=1e-7)


def test_magnitude_and_activation_baselines(tokenizer):
    model = make_model("llama")
    name = "model.layers.0.mlp.up_proj"
    weight = model.get_submodule(name).weight.detach()
    assert torch.equal(hf_sparc.attribute(model, method="magnitude", level="weight")[name], weight.abs())
    assert torch.allclose(hf_sparc.attribute(model, method="magnitude")[name], weight.norm(dim=1))
    activation = hf_sparc.attribute(model, TEXTS, tokenizer=tokenizer, method="activation")[name]
    assert activation.shape == (48,) and torch.all(activation > 0)


@pytest.mark.parametrize("arch", sorted(CONFIGS))
def test_every_architecture_runs_every_supported_level(arch, tokenizer):
    model = make_model(arch)
    n_heads = model.config.num_attention_heads
    for method in METHODS.values():
        for level in method.levels:
            rel = hf_sparc.attribute(model, TEXTS[:3], tokenizer=tokenizer, method=method.name, level=level)
            assert len(rel) > 0 and rel.level == level and rel.method == method.name
            for name, scores in rel.items():
                assert torch.isfinite(scores).all(), (method.name, level, name)
                module = model.get_submodule(name)
                if level == "weight":
                    assert scores.shape == module.weight.shape
                elif level == "head":
                    assert scores.shape == (n_heads,)
            if method.needs_gradient and level != "token":
                assert any(float(t.abs().sum()) > 0 for t in rel.values())


def test_works_on_a_peft_model(tokenizer):
    from peft import LoraConfig, get_peft_model

    model = make_model("llama")
    plain = hf_sparc.attribute(model, TEXTS, tokenizer=tokenizer)
    peft_model = get_peft_model(model, LoraConfig(target_modules=["q_proj", "v_proj"], r=2))
    wrapped = hf_sparc.attribute(peft_model, TEXTS, tokenizer=tokenizer)
    assert set(wrapped) == set(plain)  # keyed by the transformers model's module names
    for name in plain:  # LoRA B starts at zero: same function, same relevance
        torch.testing.assert_close(wrapped[name], plain[name], rtol=1e-5, atol=1e-7)
    assert all(p.requires_grad == ("lora_" in n) for n, p in peft_model.named_parameters())


def test_projections_under_an_adapter_layer_are_refused_and_the_merged_copy_works(tokenizer):
    model = make_model("llama")
    masks = hf_sparc.select(hf_sparc.attribute(model, TEXTS, tokenizer=tokenizer), count=5)
    merged = hf_sparc.apply_masks(copy.deepcopy(model), masks).merge_and_unload()
    peft_model = hf_sparc.apply_masks(model, masks)
    with pytest.raises(ValueError, match=r"up_proj is part of a PEFT adapter layer.*merge_and_unload"):
        hf_sparc.attribute(peft_model, TEXTS, tokenizer=tokenizer)
    for level, targets in (("weight", None), ("neuron", r".*up_proj\.base_layer")):  # nor inside one
        with pytest.raises(ValueError, match=r"base_layer is part of a PEFT adapter layer .*up_proj: "):
            hf_sparc.attribute(peft_model, TEXTS, tokenizer=tokenizer, level=level, target_modules=targets)
    rel = hf_sparc.attribute(merged, TEXTS, tokenizer=tokenizer)
    for name, cut in masks.items():  # cut neurons have no relevance left, the others keep some
        assert torch.count_nonzero(rel[name][cut]) == 0
        assert torch.count_nonzero(rel[name]) == rel[name].numel() - cut.numel()


def test_bf16_model_accumulates_in_fp32(tokenizer):
    model = make_model("llama", dtype=torch.bfloat16)
    rel = hf_sparc.attribute(model, TEXTS, tokenizer=tokenizer, level="weight")
    reference = hf_sparc.attribute(model.float(), TEXTS, tokenizer=tokenizer, level="weight")
    name = "model.layers.0.mlp.up_proj"
    assert rel[name].dtype == torch.float32
    cosine = torch.nn.functional.cosine_similarity(rel[name].flatten(), reference[name].flatten(), dim=0)
    assert cosine > 0.95


def test_bad_inputs_fail_clearly(tokenizer):
    model = make_model("llama")
    with pytest.raises(ValueError, match="empty"):
        hf_sparc.attribute(model, [], tokenizer=tokenizer)
    with pytest.raises(ValueError, match="Unknown level"):
        hf_sparc.attribute(model, TEXTS, tokenizer=tokenizer, level="layer")
    with pytest.raises(ValueError, match="Unknown method"):
        hf_sparc.attribute(model, TEXTS, tokenizer=tokenizer, method="shap")
    with pytest.raises(ValueError, match="cannot score the 'token' level"):
        hf_sparc.attribute(model, TEXTS, tokenizer=tokenizer, method="wanda", level="token")
    with pytest.raises(ValueError, match="Unknown objective"):
        hf_sparc.attribute(model, TEXTS, tokenizer=tokenizer, objective="loss")
    with pytest.raises(ValueError, match="matched no module"):
        hf_sparc.attribute(model, TEXTS, tokenizer=tokenizer, target_modules=["fc1"])
    with pytest.raises(ValueError, match="not a projection"):
        hf_sparc.attribute(model, TEXTS, tokenizer=tokenizer, target_modules=["mlp"])
    with pytest.raises(ValueError, match="tokenizer"):
        hf_sparc.attribute(model, TEXTS)
    with pytest.raises(TypeError, match="single string"):
        hf_sparc.attribute(model, "the cat sat", tokenizer=tokenizer)
    with (
        pytest.raises(ValueError, match="None of the 2 reference texts has a token to explain"),
        pytest.warns(UserWarning, match="skipped"),
    ):
        hf_sparc.attribute(model, ["", "hello"], tokenizer=tokenizer)
    with pytest.warns(UserWarning, match="truncated"):
        rel = hf_sparc.attribute(model, TEXTS, tokenizer=tokenizer, level="token", max_length=4)
    assert max(len(t) for t in rel.per_text()) == 4
    with pytest.warns(UserWarning, match="skipped"):
        rel = hf_sparc.attribute(model, ["", *TEXTS], tokenizer=tokenizer)
    assert rel.info.n_samples == len(TEXTS)

    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        meta = AutoModelForCausalLM.from_config(CONFIGS["llama"]())
    with pytest.raises(ValueError, match="meta"):
        hf_sparc.attribute(meta, TEXTS, tokenizer=tokenizer)

    from transformers import BertConfig, BertLMHeadModel

    with pytest.raises(ValueError, match=r"Unsupported architecture 'bert'.*ArchitectureSpec"):
        hf_sparc.attribute(BertLMHeadModel(BertConfig(is_decoder=True)), TEXTS, tokenizer=tokenizer)


def test_datasets_input_and_missing_column(tokenizer):
    from datasets import Dataset

    model = make_model("llama")
    dataset = Dataset.from_dict({"sentence": TEXTS})
    from_dataset = hf_sparc.attribute(model, dataset, tokenizer=tokenizer, text_column="sentence")
    from_list = hf_sparc.attribute(model, TEXTS, tokenizer=tokenizer)
    assert all(torch.equal(from_dataset[n], from_list[n]) for n in from_list)
    with pytest.raises(ValueError, match="no 'text' column"):
        hf_sparc.attribute(model, dataset, tokenizer=tokenizer)


def test_forward_only_methods_count_no_tokens_for_pairs_with_nothing_to_explain(tokenizer):
    model = make_model("llama")
    pairs = [{"prompt": "the cat sat on the mat and ran", "continuation": ""}, TEXTS[0]]
    rel = hf_sparc.attribute(model, pairs, tokenizer=tokenizer, method="activation", max_length=4)
    # the pair explains nothing, and nothing negative is counted; TEXTS[0] keeps 4 tokens, explains 3
    assert rel.info.n_samples == 2 and rel.info.n_tokens == 3


def _with_bos(tokenizer):
    from tokenizers.processors import TemplateProcessing

    tokenizer = copy.deepcopy(tokenizer)
    bos = tokenizer.convert_tokens_to_ids("<s>")
    processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos)])
    tokenizer.backend_tokenizer.post_processor = processor
    return tokenizer


@pytest.mark.parametrize("bos", [False, True])
def test_long_pairs_lose_prompt_tokens_from_the_left_and_keep_the_continuation(tokenizer, bos):
    tokenizer = _with_bos(tokenizer) if bos else tokenizer
    model = make_model("llama")
    long = {"prompt": "the cat sat on the mat and ran", "continuation": " to the big house"}
    with pytest.warns(UserWarning, match="1 of 1 reference texts were longer than max_length=6"):
        cut = hf_sparc.attribute(model, [long], tokenizer=tokenizer, level="token", max_length=6)
    # what is left: [BOS] + the last prompt tokens that fit + the whole continuation
    kept = {"prompt": "ran" if bos else "and ran", "continuation": long["continuation"]}
    whole = hf_sparc.attribute(model, [kept], tokenizer=tokenizer, level="token", max_length=64)
    assert [len(t) for t in cut.per_text()] == [6]
    torch.testing.assert_close(cut.per_text()[0], whole.per_text()[0], rtol=0, atol=0)
    assert cut.info.n_tokens == whole.info.n_tokens == 4  # every continuation token is explained


@pytest.mark.parametrize("bos", [False, True])
def test_a_continuation_longer_than_max_length_keeps_one_prompt_token_and_its_start(tokenizer, bos):
    tokenizer = _with_bos(tokenizer) if bos else tokenizer
    model = make_model("llama")
    long = {"prompt": "the cat sat", "continuation": " on the mat and ran to the house"}
    with pytest.warns(UserWarning, match="truncated"):
        cut = hf_sparc.attribute(model, [long], tokenizer=tokenizer, level="token", max_length=4)
    # no room for BOS: the last prompt token, then the first three continuation tokens explained
    kept = {"input_ids": tokenizer.convert_tokens_to_ids(["sat", "on", "the", "mat"])}
    whole = hf_sparc.attribute(model, [kept], tokenizer=tokenizer, level="token")
    torch.testing.assert_close(cut.per_text()[0], whole.per_text()[0], rtol=0, atol=0)
    assert cut.info.n_tokens == whole.info.n_tokens == 3
