"""AurA built in: expertise (AUROC of max-pooled responses), its dampening rule, its fixed-count variant."""

from __future__ import annotations

import pytest
import torch
from sparc_fixtures import assert_same_logits, mlp_up_names, tiny_model
from transformers import PreTrainedTokenizerFast

import hf_sparc
from hf_sparc import Relevance, RelevanceInfo
from hf_sparc.attribution.expertise import _max_responses, auroc

POSITIVE = ["the cat sat on the mat", "a dog", "cats and dogs and birds sing", "one two"]
NEGATIVE = ["three four five six seven eight nine ten", "the mat", "birds", "sing a song of six"]


def test_auroc_matches_sklearn_with_ties():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    generator = torch.Generator().manual_seed(0)
    # rounded to one decimal: plenty of ties within and across the classes
    positive = (torch.randn(37, 5, generator=generator) + 0.3).round(decimals=1)
    negative = torch.randn(23, 5, generator=generator).round(decimals=1)
    labels = [1] * 37 + [0] * 23
    values = torch.cat([positive, negative]).numpy()
    expected = [sklearn_metrics.roc_auc_score(labels, values[:, j]) for j in range(5)]
    torch.testing.assert_close(auroc(positive, negative), torch.tensor(expected, dtype=torch.float32))
    assert auroc(torch.ones(2, 1), torch.zeros(3, 1)).item() == 1.0
    assert auroc(torch.ones(2, 1), torch.ones(3, 1)).item() == 0.5
    with pytest.raises(ValueError, match="at least one"):
        auroc(torch.ones(0, 1), torch.ones(3, 1))


def max_by_hand(model, tokenizer, texts, module_name):
    """Each text alone (no padding): the max over its tokens of the module's output."""
    rows, seen = [], []
    handle = model.get_submodule(module_name).register_forward_hook(lambda _m, _i, out: seen.append(out))
    for text in texts:
        with torch.no_grad():
            model(input_ids=torch.tensor([tokenizer(text)["input_ids"]]))
        rows.append(seen.pop()[0].amax(dim=0))
    handle.remove()
    return torch.stack(rows)


def test_expertise_pools_real_tokens_only(tokenizer: PreTrainedTokenizerFast):
    model = tiny_model("llama")
    names = mlp_up_names(model)
    # batch_size 4 pads the short texts: padding must not enter the maximum
    modules = {name: model.get_submodule(name) for name in names}
    pooled = _max_responses(model, modules, POSITIVE, tokenizer, 4, 128, "", False)
    for name in names:
        torch.testing.assert_close(pooled[name], max_by_hand(model, tokenizer, POSITIVE, name))

    # one text per batch computes exactly what the hand-made maxima do, so ties stay ties
    scores = hf_sparc.expertise(model, POSITIVE, NEGATIVE, tokenizer=tokenizer, batch_size=1, progress=False)
    assert scores.method == "aura-auroc" and scores.level == "neuron" and list(scores) == names
    assert scores.info.settings["positive"] == 4 and scores.info.n_samples == 8
    for name in names:
        hand = auroc(
            max_by_hand(model, tokenizer, POSITIVE, name), max_by_hand(model, tokenizer, NEGATIVE, name)
        )
        assert torch.equal(scores[name], hand)
    assert any(bool((s != 0.5).any()) for s in scores.values())  # the scores say something


def fixed_expertise(model) -> Relevance:
    names = mlp_up_names(model)
    scores = {name: torch.linspace(0.1, 1.0, 64).roll(7 * i) for i, name in enumerate(names)}
    return Relevance(scores, RelevanceInfo(method="aura-auroc", level="neuron", n_samples=8, n_tokens=0))


def test_select_aura_dampens_every_expert_like_ml_aura_hooks():
    model = tiny_model("llama")
    expertise = fixed_expertise(model)
    masks = hf_sparc.select_aura(expertise)
    assert masks.soft
    for name, scores in expertise.items():
        experts = torch.nonzero(scores > 0.5).flatten()
        assert torch.equal(masks[name], experts)
        torch.testing.assert_close(masks.scale(name), 1 - 2 * (scores[experts] - 0.5))

    # ml-aura's AURAHook: output * alpha on the hooked module, alpha = 1 for non-experts
    reference = tiny_model("llama")
    for name, scores in expertise.items():
        alpha = torch.where(scores > 0.5, 1 - 2 * (scores - 0.5), torch.ones_like(scores))
        reference.get_submodule(name).register_forward_hook(lambda _m, _i, out, a=alpha: out * a)
    ids = torch.randint(0, 100, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = reference(ids).logits
        actual = hf_sparc.apply_masks(model, masks)(ids).logits
    assert_same_logits(actual, expected)


def test_select_aura_fixed_count_cuts_the_top_experts():
    model = tiny_model("llama")
    expertise = fixed_expertise(model)
    masks = hf_sparc.select_aura(expertise, count=5)
    assert not masks.soft and masks.total() == 5 and masks.rule == "select_aura(count=5)"
    threshold = min(float(expertise[name][masks[name]].min()) for name in masks)
    others = torch.cat(
        [
            expertise[n][~torch.isin(torch.arange(64), masks[n] if n in masks else torch.tensor([]))]
            for n in expertise
        ]
    )
    assert threshold >= float(others.max())


def test_select_aura_refuses_scores_that_are_no_auroc():
    model = tiny_model("llama")
    expertise = fixed_expertise(model) * 2.0
    with pytest.raises(ValueError, match="AUROC"):
        hf_sparc.select_aura(expertise)


def alternate_toxicity(texts):
    """A stand-in scorer: every other continuation is toxic, so references have contrast sentences."""
    return [float(i % 2) for i in range(len(texts))]


def test_correction_reports_aura_rows_and_dampened_lrp(tokenizer):
    from conftest import make_model
    from test_correction import SMALL

    from hf_sparc.workflows.correction import AURA, AURA_TOP_K, CorrectionSettings, run_correction

    model = make_model("llama")
    settings = CorrectionSettings(
        count=5, controls=("random",), random_seeds=1, dampen=0.25, focus="continuation", **SMALL
    )
    result = run_correction(model, tokenizer, settings, scorer=alternate_toxicity)
    assert list(result.rows) == ["base", "lrp", AURA, AURA_TOP_K, "random", "random (unprotected)"]
    aura = result.selections[AURA][0]
    assert aura.soft and result.rows[AURA]["pruned"] == aura.total() > 0
    assert not result.selections[AURA_TOP_K][0].soft and result.rows[AURA_TOP_K]["pruned"] == 5
    # the main method's units keep a quarter of their output; the controls are still cut
    assert result.masks.soft and all(bool((result.masks.scale(n) == 0.25).all()) for n in result.masks)
    assert "dampened to 0.25" in result.rules["lrp"] and not result.selections["random"][0].soft
    assert result.references["n_others"] >= 1

    main_aura = run_correction(
        model,
        tokenizer,
        CorrectionSettings(method=AURA, count=5, focus="continuation", **SMALL),
        scorer=alternate_toxicity,
    )
    assert list(main_aura.rows) == ["base", AURA, AURA_TOP_K] and main_aura.masks.soft
    for bad in (dict(method=AURA, controls=("random",)), dict(method=AURA, dampen=0.5), dict(dampen=1.0)):
        with pytest.raises(ValueError, match=r"aura|dampen"):
            run_correction(model, tokenizer, CorrectionSettings(**bad, **SMALL), scorer=alternate_toxicity)
