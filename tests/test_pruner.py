"""SparcConfig / SparcPruner: configuration, fit → select → prune, persistence, Trainer callback."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import TEXTS, make_model
from sparc_fixtures import masks_for, tiny_model

import hf_sparc
from hf_sparc import Relevance, RelevanceInfo, SparcConfig, SparcPruner
from hf_sparc.reports.pruning import pruning_report, write_pruning_report
from hf_sparc.tuner.enforce import ZeroingPlan

UNDESIRED = ["bad bad bad dog", "very bad", "not good bad"]
GENERAL = TEXTS


def test_config_validates_and_round_trips(tmp_path):
    config = SparcConfig(method="cp-lrp", level="head", count=3, scope="layer", max_length=64)
    config.save_pretrained(tmp_path)
    assert SparcConfig.from_pretrained(tmp_path) == config
    assert SparcConfig().count == 100 and SparcConfig(fraction=0.1).count is None
    for kwargs, message in [
        ({"method": "shap"}, "Unknown method"),
        ({"level": "layer"}, "Unknown level"),
        ({"level": "token"}, "not prunable"),
        ({"method": "wanda", "level": "head"}, "cannot score"),
        ({"count": 10, "fraction": 0.1}, "not both"),
        ({"count": -1}, "positive"),
        ({"fraction": 1.5}, r"\(0, 1\)"),
        ({"scope": "row"}, "needs level='weight'"),
        ({"scope": "model"}, "Unknown scope"),
        ({"batch_size": 0}, "batch_size"),
    ]:
        with pytest.raises(ValueError, match=message):
            SparcConfig(**kwargs)
    (tmp_path / "sparc_config.json").write_text('{"count": 3, "colour": "red"}')
    with pytest.raises(ValueError, match="colour"):
        SparcConfig.from_pretrained(tmp_path)


def test_fit_prune_save_load_reselect_without_reattributing(tmp_path, tokenizer, monkeypatch):
    model = make_model("llama")
    pruner = SparcPruner(SparcConfig(level="neuron", count=5))
    pruner.fit(model, tokenizer, undesired=UNDESIRED, general=GENERAL)
    assert set(pruner.relevance) == {"undesired", "general"} and pruner.masks.total() == 5
    peft_model = pruner.prune(model)
    assert peft_model.active_adapters == ["sparc"]
    pruner.save_pretrained(tmp_path)

    def no_attribution(*args, **kwargs):
        raise AssertionError("relevance was recomputed")

    monkeypatch.setattr("hf_sparc.workflows.pruner.attribute", no_attribution)
    loaded = SparcPruner.from_pretrained(tmp_path)
    assert loaded.config == pruner.config
    assert dict(loaded.masks.items()).keys() == dict(pruner.masks.items()).keys()
    assert all(torch.equal(loaded.masks[n], pruner.masks[n]) for n in pruner.masks)
    bigger = loaded.select(count=12)
    assert bigger.total() == 12
    expected = hf_sparc.select_contrastive(
        undesired=pruner.relevance["undesired"], general=pruner.relevance["general"], count=12
    )
    assert all(torch.equal(bigger[n], expected[n]) for n in expected) and set(bigger) == set(expected)


def test_contrastive_selection_finds_the_planted_units():
    def rel(values):
        scores = {
            "model.layers.0.mlp.up_proj": torch.tensor(values[:4]),
            "model.layers.1.mlp.up_proj": torch.tensor(values[4:]),
        }
        return Relevance(scores, RelevanceInfo(method="lrp", level="neuron", n_samples=1, n_tokens=1))

    # Units 2 (layer 0) and 1 (layer 1) matter for the undesired texts and little for general
    # text; unit 0 (layer 0) matters a lot for both and must be protected.
    undesired = rel([5.0, 0.1, 4.0, 0.2, 0.1, 3.0, 0.0, 0.3])
    general = rel([6.0, 0.5, 0.2, 0.4, 0.3, 0.1, 0.2, 0.5])
    pruner = SparcPruner(SparcConfig(count=2))
    pruner.relevance = {"undesired": undesired, "general": general}
    masks = pruner.select()
    assert masks["model.layers.0.mlp.up_proj"].tolist() == [2]
    assert masks["model.layers.1.mlp.up_proj"].tolist() == [1]
    assert "model.layers.0.mlp.up_proj" in masks and 0 not in masks["model.layers.0.mlp.up_proj"]


def _train(model, tokenizer, pruner, tmp_path, steps=3):
    from datasets import Dataset
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    dataset = Dataset.from_dict({"text": TEXTS}).map(
        lambda row: tokenizer(row["text"]), remove_columns=["text"]
    )
    args = TrainingArguments(
        output_dir=str(tmp_path / "trainer"),
        max_steps=steps,
        per_device_train_batch_size=4,
        learning_rate=5e-2,
        weight_decay=0.1,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
        callbacks=[pruner] if pruner else [],
    )
    trainer.train()
    return trainer.state.global_step


def _pruned_model(tokenizer, level="neuron", count=6):
    model = make_model("llama")
    pruner = SparcPruner(SparcConfig(level=level, count=count)).fit(
        model, tokenizer, undesired=UNDESIRED, general=GENERAL
    )
    return pruner.prune(model).merge_and_unload(), pruner


def _pruned_rows(model, pruner):
    return {n: model.get_submodule(n).weight.detach()[idx] for n, idx in pruner.masks.items()}


def test_full_fine_tuning_keeps_pruned_weights_at_zero(tmp_path, tokenizer):
    model, pruner = _pruned_model(tokenizer)
    assert all(torch.all(rows == 0) for rows in _pruned_rows(model, pruner).values())
    assert _train(model, tokenizer, pruner, tmp_path) == 3
    assert all(torch.all(rows == 0) for rows in _pruned_rows(model, pruner).values())
    # Control: without the callback the optimizer revives the cut units.
    model, pruner = _pruned_model(tokenizer)
    _train(model, tokenizer, None, tmp_path)
    assert any(torch.any(rows != 0) for rows in _pruned_rows(model, pruner).values())


@pytest.mark.parametrize("level", ["neuron", "head"])
def test_lora_on_a_masked_model_cannot_revive_pruned_units(level, tmp_path, tokenizer):
    from peft import LoraConfig, get_peft_model

    model, pruner = _pruned_model(tokenizer, level=level, count=3 if level == "head" else 6)
    lora = get_peft_model(
        model, LoraConfig(r=2, target_modules=["up_proj", "o_proj"], init_lora_weights=False)
    )
    _train(lora, tokenizer, pruner, tmp_path)
    base = lora.get_base_model()
    for name, index in pruner.masks.items():
        if level == "neuron":  # the unit's output is exactly zero whatever the input
            out = base.get_submodule(name)(torch.randn(3, 32))
            assert torch.all(out[:, index] == 0), name
        else:  # the head's output has no effect on the output projection (LoRA delta included)
            o_proj = base.get_submodule(name + ".o_proj")
            heads = torch.randn(3, 4, 8)
            changed = heads.clone()
            changed[:, index] = torch.randn(3, len(index), 8)
            assert torch.equal(o_proj(heads.flatten(1)), o_proj(changed.flatten(1))), name
            assert not torch.equal(heads, changed)


def test_callback_fits_at_train_begin_when_given_reference_data(tmp_path, tokenizer):
    model = make_model("llama")
    pruner = SparcPruner(SparcConfig(count=4), tokenizer=tokenizer, undesired=UNDESIRED, general=GENERAL)
    _train(model, tokenizer, pruner, tmp_path, steps=1)
    assert pruner.masks is not None and pruner.masks.total() == 4
    assert all(torch.all(rows == 0) for rows in _pruned_rows(model, pruner).values())
    with pytest.raises(ValueError, match="no masks and no reference data"):
        _train(make_model("llama"), tokenizer, SparcPruner(), tmp_path, steps=1)


@pytest.mark.parametrize("level", ["neuron", "head", "weight"])
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_zeroing_plan_zeroes_exactly_what_merging_the_adapter_zeroes(arch, level):
    """GPT-2 stores its projections [in, out]: a plan that took the wrong dimension would zero
    other weights than the adapter's merge."""
    masks = masks_for(tiny_model(arch), level)
    original = tiny_model(arch).state_dict()
    planned = tiny_model(arch)
    ZeroingPlan.build(planned, masks).apply()
    merged = hf_sparc.apply_masks(tiny_model(arch), masks).merge_and_unload().state_dict()
    actual = planned.state_dict()
    assert actual.keys() == merged.keys()
    assert [k for k in merged if not torch.equal(actual[k], merged[k])] == []
    assert [k for k in merged if not torch.equal(actual[k], original[k])], "nothing was zeroed"


def test_pruning_run_report_round_trips_and_renders_the_change(tmp_path):
    model = tiny_model("llama")
    pruner = SparcPruner(SparcConfig(count=10))
    pruner.masks = masks_for(model, "neuron")
    references = {"general": {"spec": "general", "n": 4}}
    report = pruning_report(pruner, "tiny", {"perplexity": 10.0}, {"perplexity": 11.0}, references)
    write_pruning_report(tmp_path, report)
    assert json.loads((tmp_path / "report.json").read_text()) == report
    assert (report["pruned"], report["config"]["count"]) == (10, 10)
    markdown = (tmp_path / "report.md").read_text()
    assert "| perplexity | 10 | 11 | +10.0% |" in markdown
    assert all(f"| `{name}` | {n} |" in markdown for name, n in report["per_module"].items())


def test_sparc_config_parses_with_hf_argument_parser():
    from transformers import HfArgumentParser

    parser = HfArgumentParser(SparcConfig)
    argv = [
        "--count",
        "5",
        "--target_modules",
        r".*\.up_proj",
        "--protect_general",
        "0.5",
        "--absolute",
        "true",
    ]
    (config,) = parser.parse_args_into_dataclasses(argv)
    assert (config.count, config.protect_general, config.target_modules) == (5, 0.5, r".*\.up_proj")
    assert config.absolute is True and parser.parse_dict({"method": "gradient"})[0].method == "gradient"
    # a regex string, as PEFT's target_modules: the same semantics as in Python
    assert SparcConfig(target_modules=r".*\.up_proj").target_modules == config.target_modules


def test_resumed_trainer_keeps_the_checkpointed_cut_without_attributing_again(
    tmp_path, tokenizer, monkeypatch
):
    from datasets import Dataset
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    dataset = Dataset.from_dict({"text": TEXTS}).map(
        lambda row: tokenizer(row["text"]), remove_columns=["text"]
    )

    def trainer(model, pruner, steps):
        args = TrainingArguments(
            output_dir=str(tmp_path / "run"), max_steps=steps, per_device_train_batch_size=4, save_steps=1,
            report_to=[], use_cpu=True, disable_tqdm=True, learning_rate=5e-2,
            restore_callback_states_from_checkpoint=True,
        )  # fmt: skip
        collator = DataCollatorForLanguageModeling(tokenizer, mlm=False)
        return Trainer(
            model=model, args=args, train_dataset=dataset, data_collator=collator, callbacks=[pruner]
        )

    first = SparcPruner(SparcConfig(count=4), tokenizer=tokenizer, undesired=UNDESIRED, general=GENERAL)
    trainer(make_model("llama"), first, steps=1).train()
    stored = json.loads((tmp_path / "run" / "checkpoint-1" / "trainer_state.json").read_text())
    assert stored["stateful_callbacks"]["SparcPruner"]["args"]["config"]["count"] == 4

    def no_refit(*args, **kwargs):
        raise AssertionError("a resumed run must not attribute again")

    monkeypatch.setattr(SparcPruner, "fit", no_refit)
    fresh = SparcPruner(SparcConfig(count=4), tokenizer=tokenizer, undesired=UNDESIRED, general=GENERAL)
    resumed = trainer(make_model("llama"), fresh, steps=2)
    resumed.train(resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-1"))
    (restored,) = [c for c in resumed.callback_handler.callbacks if isinstance(c, SparcPruner)]
    assert restored.masks_state == first.masks_state and restored.masks.total() == 4
    assert restored.masks.settings == first.masks.settings and first.masks.settings  # provenance kept
    model = resumed.model
    assert all(torch.all(model.get_submodule(n).weight[idx] == 0) for n, idx in restored.masks.items())
