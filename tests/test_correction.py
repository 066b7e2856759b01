"""The correction experiment with controls, on a tiny model with a stand-in toxicity scorer."""

from __future__ import annotations

import copy
import dataclasses
import json
import statistics

import pytest
from conftest import TEXTS, make_model

import hf_sparc
from hf_sparc.behaviors import BEHAVIORS, GeneratedBehavior, Metric, get_behavior
from hf_sparc.data.builtin import builtin_dataset, split_items
from hf_sparc.metrics import generate_continuations
from hf_sparc.reports.writer import write_files
from hf_sparc.workflows._experiment import prepare_experiment
from hf_sparc.workflows.correction import CorrectionSettings, correction_figure, run_correction

# Sizes that keep a whole correction experiment on a tiny model within seconds.
SMALL = dict(
    n_candidates=4,
    n_general=4,
    n_eval_prompts=4,
    n_eval_texts=4,
    max_new_tokens=4,
    max_length=16,
    batch_size=4,
    tasks=(),
)


def test_controls_use_the_same_count_and_level(tokenizer, tmp_path, capsys):
    model = make_model("llama")
    settings = CorrectionSettings(count=5, random_seeds=2, **SMALL)
    calls = []

    def everything_is_toxic(texts):
        calls.append(len(texts))
        return [1.0] * len(texts)

    result = run_correction(model, tokenizer, settings, scorer=everything_is_toxic)
    assert list(result.rows) == [
        "base", "lrp", "gradient", "wanda", "activation", "magnitude", "random", "random (unprotected)"
    ]  # fmt: skip
    assert result.masks.total() == 5 and result.masks.level == "neuron"
    assert all(row["pruned"] == 5 for name, row in result.rows.items() if name != "base")
    assert "toxic_rate_sd" in result.rows["random"] and result.rows["base"]["toxic_rate"] == 1.0
    assert result.references["n_candidates"] == 4 and 1 <= result.references["n_kept"] <= 4
    assert all(row["perplexity"] > 1 for row in result.rows.values())
    table = result.table()
    assert all(f"| {name} |" in table for name in result.rows)
    write_files(tmp_path, {"plot.png": correction_figure(result)})
    assert (tmp_path / "plot.png").stat().st_size > 1000
    # references + base + lrp + 4 controls + 2 random seeds + 2 unprotected ones, each scored once
    assert len(calls) >= 1 + 1 + 1 + 4 + 2 + 2
    # the evaluations (each a full generation pass) have a bar
    err = capsys.readouterr().err
    assert "hf_sparc evaluating selections: 100%" in err and "| 10/10 [" in err


def test_unknown_behavior_or_control_fails_before_any_work(tokenizer):
    model = make_model("llama")
    with pytest.raises(ValueError, match="Unknown behavior"):
        run_correction(model, tokenizer, CorrectionSettings(behavior="rudeness"))
    with pytest.raises(ValueError, match="cannot score"):
        run_correction(model, tokenizer, CorrectionSettings(level="head", controls=("magnitude",)))
    for split in ("evaluation", "reference", "all"):  # only a held-out split can be measured on
        with pytest.raises(ValueError, match=f"unknown split '{split}' to measure on; use one of dev, test"):
            run_correction(model, tokenizer, CorrectionSettings(split=split))


def test_focus_decides_what_the_references_explain(tokenizer):
    model = make_model("llama")
    runs = {
        focus: run_correction(
            model,
            tokenizer,
            CorrectionSettings(count=3, controls=(), focus=focus, **SMALL),
            scorer=lambda texts: [1.0] * len(texts),  # every continuation and every word is toxic
        )
        for focus in ("continuation", "words")
    }
    whole, words = (list(runs[focus].reference_pairs) for focus in ("continuation", "words"))
    for focus, result in runs.items():
        assert result.references["focus"] == focus
        assert result.references["n_kept"] == len(result.reference_pairs)
        assert result.references["n_continuations"] == len(whole)
    # one pair per word of every continuation, the word alone explained after the words before it
    assert len(words) == sum(len(pair["continuation"].split()) for pair in whole)
    assert all(len(pair["continuation"].split()) == 1 for pair in words)
    assert {pair["prompt"] + pair["continuation"] for pair in words} >= {
        pair["prompt"] + pair["continuation"] for pair in whole
    }


def test_unknown_focus_fails_before_any_work(tokenizer):
    with pytest.raises(ValueError, match="Unknown focus"):
        run_correction(make_model("llama"), tokenizer, CorrectionSettings(focus="tokens"))


class WordCount(GeneratedBehavior):
    """A behaviour defined only here: continuations with more than ``threshold`` words."""

    name = "word-count"
    default_threshold = 0.0
    default_focus = "continuation"
    metrics = (Metric("mean_words", higher_is_better=False),)

    def candidates(self, split="reference", seed=0):
        return split_items(TEXTS, split, seed)

    def scoring(self, scorer):
        return "words", lambda generations: [float(len(g["continuation"].split())) for g in generations]

    def shows(self, score, threshold):
        return score > threshold

    def flag_words(self, words, threshold, scorer):
        return [True] * len(words)

    def measure(self, model, tokenizer, items, *, max_new_tokens, batch_size, scorer):
        generations = generate_continuations(
            model, tokenizer, items, max_new_tokens=max_new_tokens, batch_size=batch_size, progress=False
        )
        return {"mean_words": [float(len(g["continuation"].split())) for g in generations]}


def test_a_behaviour_registered_elsewhere_runs_through_the_whole_experiment(tokenizer, tmp_path, monkeypatch):
    monkeypatch.setitem(BEHAVIORS, "word-count", WordCount())
    settings = CorrectionSettings(
        behavior="word-count", count=3, controls=("random",), random_seeds=2, **SMALL
    )
    result = run_correction(make_model("llama"), tokenizer, settings)
    assert result.metric == "mean_words"
    assert list(result.rows) == ["base", "lrp", "random", "random (unprotected)"]
    assert all("mean_words" in row and row["perplexity"] > 1 for row in result.rows.values())
    assert result.references["behavior"] == "word-count" and result.references["n_kept"] >= 1
    assert result.settings.focus == "continuation"  # the behaviour's default
    result.save(tmp_path, "word count")
    assert "| selection | candidates | units | mean_words |" in (tmp_path / "report.md").read_text()
    assert "Held-out data: the **dev** split" in (tmp_path / "report.md").read_text()
    assert json.loads((tmp_path / "report.json").read_text())["metric"] == "mean_words"


@pytest.mark.parametrize("split", ["dev", "test"])
def test_held_out_items_and_texts_come_from_the_chosen_split(tokenizer, monkeypatch, split):
    monkeypatch.setitem(BEHAVIORS, "word-count", WordCount())
    settings = CorrectionSettings(behavior="word-count", count=3, controls=(), split=split, **SMALL)
    experiment = prepare_experiment(make_model("llama"), tokenizer, settings)
    assert experiment.settings.split == split
    assert experiment.held_out == split_items(TEXTS, split)[: SMALL["n_eval_prompts"]]
    assert experiment.texts == builtin_dataset("general", split)[: SMALL["n_eval_texts"]]
    assert experiment.general == builtin_dataset("general", "reference")[: SMALL["n_general"]]
    assert CorrectionSettings().split == "dev"  # choices are made on dev unless test is asked for


def test_unknown_behaviour_lists_the_registered_ones():
    with pytest.raises(ValueError, match="Unknown behavior 'rudeness'") as error:
        get_behavior("rudeness")
    assert all(repr(name) in str(error.value) for name in BEHAVIORS)


def test_every_control_chooses_among_the_main_methods_candidates(tokenizer):
    model = make_model("llama")
    settings = CorrectionSettings(count=5, random_seeds=3, protect_general=0.5, **SMALL)
    experiment = prepare_experiment(model, tokenizer, settings, scorer=lambda texts: [1.0] * len(texts))
    (main,) = experiment.fit("lrp", 5)
    pool = main.candidate_pool()
    result = run_correction(model, tokenizer, settings, scorer=lambda texts: [1.0] * len(texts))
    assert result.masks.indices.keys() == main.masks.indices.keys()

    def inside(masks):
        return all(bool(pool[name][idx].all()) for name, idx in masks.indices.items())

    assert inside(result.masks)
    for name in ("gradient", "wanda", "activation", "magnitude", "random"):
        assert result.rules[name] == "lrp's candidates"
        assert all(inside(m) for m in result.selections[name]), name
    # the labelled unprotected row draws from every unit: over 3 seeds some pick lands outside
    assert result.rules["random (unprotected)"].startswith("all units")
    assert not all(inside(m) for m in result.selections["random (unprotected)"])
    # per-item outcomes behind every row, one list per seed, as long as the held-out set
    record = result.to_dict()
    assert [len(seeds) for seeds in record["outcomes"].values()] == [1, 1, 1, 1, 1, 1, 3, 3]
    assert all(len(o["toxic_rate"]) == 4 and len(o["nll"]) == 4 for o in record["outcomes"]["random"])
    assert result.rows["base"]["toxic_rate"] == statistics.fmean(record["outcomes"]["base"][0]["toxic_rate"])


def test_heads_and_neurons_are_measured_together_as_their_merged_cuts(tokenizer):
    model = make_model("llama")
    settings = CorrectionSettings(count=4, **SMALL)
    experiment = prepare_experiment(model, tokenizer, settings, scorer=lambda texts: [1.0] * len(texts))
    (neurons,) = experiment.fit("lrp", 4)
    (heads,) = experiment.fit("lrp", 2, level="head")
    assert heads.masks.level == "head" and heads.masks.total() == 2
    base = experiment.measure(None)
    both = experiment.measure([heads.masks, neurons.masks])
    assert both.values["pruned"] == 6
    assert experiment.measure(None).outcomes == base.outcomes  # every adapter unloaded again
    merged = copy.deepcopy(model)
    for masks in (heads.masks, neurons.masks):
        merged = hf_sparc.apply_masks(merged, masks).merge_and_unload()
    reference = dataclasses.replace(experiment, model=merged).measure(None)
    assert both.values["perplexity"] == pytest.approx(reference.values["perplexity"], rel=1e-6)
    alone = [experiment.measure(m).values["perplexity"] for m in (heads.masks, neurons.masks)]
    assert all(p != pytest.approx(both.values["perplexity"], rel=1e-6) for p in alone)  # both acted
