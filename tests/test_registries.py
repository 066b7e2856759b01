"""The attribution registries: signals (METHODS), objectives (OBJECTIVES), LRP placement maps, and
the one unit-site hook shared by the collector and insight."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import TEXTS, make_model

import hf_sparc
from hf_sparc.attribution import METHODS, OBJECTIVES, AttributionMethod
from hf_sparc.attribution.lrp import PLACEMENTS
from hf_sparc.attribution.lrp.rules import DivideGradient, StopGradient
from hf_sparc.attribution.signals import StreamedSignal, WeightSignal
from hf_sparc.attribution.sites import hook_unit_site
from hf_sparc.data import tasks
from hf_sparc.metrics import task
from hf_sparc.workflows import insight

NAMES = ["cat", "dog", "mat", "house", "world", "hello"]  # single tokens of the tiny tokenizer


class _TokenCount(StreamedSignal):
    """Counts the real tokens each neuron saw, per sample: a signal the collector has never heard of."""

    name = "token-count"
    levels = ("neuron",)

    def attach(self, collector, name, module):
        def observe(site):
            collector.add(name, torch.ones_like(collector.tokens(site, collector.select)).sum(0))

        return hook_unit_site(collector.model, collector.spec, collector.level, name, observe)

    def finish(self, total, module, level, counts):
        return total / counts.n_samples


class _Ones(WeightSignal):
    name = "ones"
    levels = ("weight", "head")

    def score(self, module, level, shape, generator):
        return torch.ones(shape)


def test_a_new_signal_is_one_class_and_one_registry_line(tokenizer, monkeypatch):
    monkeypatch.setitem(METHODS, "token-count", AttributionMethod("token-count", _TokenCount()))
    monkeypatch.setitem(METHODS, "ones", AttributionMethod("ones", _Ones()))
    model = make_model("llama")
    rel = hf_sparc.attribute(model, TEXTS, tokenizer=tokenizer, method="token-count", batch_size=3)
    tokens_per_text = sum(len(tokenizer(t)["input_ids"]) for t in TEXTS) / len(TEXTS)
    assert len(rel) == model.config.num_hidden_layers
    for scores in rel.values():
        assert scores.shape == (model.config.intermediate_size,)
        assert torch.allclose(scores, torch.full_like(scores, tokens_per_text))
    heads = hf_sparc.attribute(model, method="ones", level="head")
    assert all(torch.equal(s, torch.ones(model.config.num_attention_heads)) for s in heads.values())
    with pytest.raises(ValueError, match="cannot score the 'neuron' level"):
        hf_sparc.attribute(model, method="ones", level="neuron")


def test_methods_table_reads_levels_and_needs_from_the_signal():
    for method in METHODS.values():
        assert method.levels == method.signal.levels
        assert method.needs_data == method.signal.needs_data
    assert {m.name for m in METHODS.values() if m.needs_gradient} == {
        "lrp",
        "cp-lrp",
        "gradient",
        "lrp-l2",
        "gradient-l2",
        "lrp-wanda",
        "gradient-wanda",
    }
    assert {m.name for m in METHODS.values() if not m.needs_data} == {"magnitude", "random"}
    assert METHODS["lrp"].signal == METHODS["gradient"].signal  # one relevance signal, three methods
    assert METHODS["lrp-l2"].signal == METHODS["gradient-l2"].signal != METHODS["lrp"].signal


def test_lrp_and_cp_lrp_placements_differ_only_in_the_attention_rules():
    lrp, cp_lrp = PLACEMENTS["lrp"], PLACEMENTS["cp-lrp"]
    differing = [f.name for f in dataclasses.fields(lrp) if getattr(lrp, f.name) != getattr(cp_lrp, f.name)]
    assert differing == ["attention"]
    assert lrp.attention == (DivideGradient(4), DivideGradient(4), DivideGradient(2))
    assert cp_lrp.attention == (StopGradient(), StopGradient(), None)


def _items(tokenizer, n=7):
    return tasks.ioi_dataset(tokenizer, n=n, names=NAMES, split="all", seed=2)


@pytest.mark.parametrize(("arch", "level"), [("llama", "neuron"), ("llama", "head"), ("gpt2", "weight")])
def test_logit_difference_is_one_pass_equal_to_two_subtracted_passes(tokenizer, arch, level):
    model = make_model(arch)
    items = _items(tokenizer)
    common = dict(tokenizer=tokenizer, method="lrp", level=level, batch_size=3, progress=False)
    one = hf_sparc.attribute(model, items, objective="logit_difference", **common)
    correct, wrong = (
        hf_sparc.attribute(model, [{"prompt": i["prompt"], "continuation": i[k]} for i in items], **common)
        for k in ("correct", "wrong")
    )
    for name, scores in one.items():
        two = correct[name] - wrong[name]
        assert float(two.abs().max()) > 0
        torch.testing.assert_close(scores, two, rtol=1e-5, atol=1e-5 * float(two.abs().max()))
    expected = task.logit_differences(model, tokenizer, items, progress=False)
    torch.testing.assert_close(torch.tensor(one.info.outputs), expected, rtol=1e-5, atol=1e-5)
    assert one.info.n_tokens == len(items) and one.info.settings["objective"] == "logit_difference"


def test_logit_difference_token_relevance_is_conserved_under_cp_lrp(tokenizer):
    model = make_model("llama")
    items = _items(tokenizer, n=4)
    rel = hf_sparc.attribute(
        model, items, tokenizer=tokenizer, method="cp-lrp", level="token", objective="logit_difference"
    )
    totals = torch.stack([t.sum() for t in rel.per_text()])
    torch.testing.assert_close(totals, task.logit_differences(model, tokenizer, items, progress=False),
                               rtol=1e-4, atol=1e-4)  # fmt: skip


def test_objectives_registry_and_task_item_checks(tokenizer):
    assert list(OBJECTIVES) == [
        "next_token",
        "next_token_centered",
        "next_token_logprob",
        "last_token_max",
        "logit_difference",
    ]
    model = make_model("llama")
    with pytest.raises(ValueError, match=r"Unknown objective 'nope'.*logit_difference"):
        hf_sparc.attribute(model, TEXTS, tokenizer=tokenizer, objective="nope")
    with pytest.raises(ValueError, match="string 'prompt', 'correct' and 'wrong'"):
        hf_sparc.attribute(model, TEXTS, tokenizer=tokenizer, objective="logit_difference")


@pytest.mark.parametrize("level", ["neuron", "head"])
def test_insight_reads_units_where_the_collector_does(tokenizer, monkeypatch, level):
    from hf_sparc.attribution.signals import forward

    seen: dict[str, list] = {"collector": [], "insight": []}

    def spy(who):
        def hook(model, spec, level, name, observe):
            seen[who].append((level, name))
            return hook_unit_site(model, spec, level, name, observe)

        return hook

    monkeypatch.setattr(forward, "hook_unit_site", spy("collector"))
    monkeypatch.setattr(insight, "hook_unit_site", spy("insight"))
    model = make_model("llama")
    rel = hf_sparc.attribute(model, TEXTS, tokenizer=tokenizer, method="activation", level=level)
    masks = hf_sparc.select(rel, count=2, scope="layer")  # cut units in every module
    units = insight.unit_contexts(model, tokenizer, masks, TEXTS, skip_special=False, progress=False)
    assert seen["collector"] == seen["insight"] == [(level, name) for name in rel]
    if level == "neuron":  # same site, same tokens: the mean |activation| agrees with the collector's
        for unit in units:
            assert unit.mean_activation == pytest.approx(float(rel[unit.module][unit.unit]), rel=1e-5)


def test_sparc_registers_through_peft_public_api_when_peft_knows_the_type(monkeypatch):
    import enum

    from peft.mapping import (
        PEFT_TYPE_TO_CONFIG_MAPPING,
        PEFT_TYPE_TO_PREFIX_MAPPING,
        PEFT_TYPE_TO_TUNER_MAPPING,
    )

    import hf_sparc.tuner as tuner

    calls = []
    for table in (PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING, PEFT_TYPE_TO_PREFIX_MAPPING):
        monkeypatch.delitem(table, "SPARC")
    monkeypatch.setattr(tuner, "PeftType", enum.Enum("PeftType", {"LORA": "LORA", "SPARC": "SPARC"}))
    monkeypatch.setattr(tuner, "register_peft_method", lambda **kwargs: calls.append(kwargs))
    tuner._register()
    assert calls == [
        dict(name="sparc", config_cls=tuner.SparcAdapterConfig, model_cls=tuner.SparcModel, prefix="pruning_")
    ]

    # a PEFT whose PeftType is closed (0.21): the same tables, filled directly
    monkeypatch.setattr(tuner, "PeftType", enum.Enum("PeftType", {"LORA": "LORA"}))
    tuner._register()
    assert PEFT_TYPE_TO_TUNER_MAPPING["SPARC"] is tuner.SparcModel and len(calls) == 1
