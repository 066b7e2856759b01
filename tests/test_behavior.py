"""hf_sparc.behaviors: reference sets from the model's own continuations, on tiny random models."""

from __future__ import annotations

import math

import pytest
from conftest import TEXTS, make_model

from hf_sparc.behaviors import BehaviorSet, Metric, behavior_references, focus_on_words, get_behavior
from hf_sparc.data import tokenize
from hf_sparc.metrics import Sampling, generate_continuations, response_uniqueness_ratio

MAX_NEW = 5


@pytest.fixture(scope="module")
def llama():
    return make_model("llama")


@pytest.fixture(scope="module")
def generations(llama, tokenizer):
    return generate_continuations(llama, tokenizer, TEXTS, max_new_tokens=MAX_NEW, progress=False)


def content_scorer(generations) -> tuple[dict[str, float], object]:
    """A fake toxicity scorer keyed on the continuation text, with values around the 0.9 threshold."""
    values = (0.95, 0.2, 0.9, 0.8999)
    table = {item["continuation"]: values[i % len(values)] for i, item in enumerate(generations)}
    return table, lambda texts: [table[text] for text in texts]


def test_toxicity_keeps_exactly_the_pairs_at_or_over_the_threshold(llama, tokenizer, generations):
    table, scorer = content_scorer(generations)
    result = behavior_references(
        llama, tokenizer, TEXTS, max_new_tokens=MAX_NEW, scorer=scorer, batch_size=3, progress=False
    )
    expected = [i for i, item in enumerate(generations) if table[item["continuation"]] >= 0.9]
    assert 0 < len(expected) < len(TEXTS)
    assert result.kept == expected
    assert list(result) == [
        {"prompt": generations[i]["prompt"], "continuation": generations[i]["continuation"]} for i in expected
    ]
    assert result.scores == [table[item["continuation"]] for item in generations]
    assert result.summary() == {
        "behavior": "toxicity",
        "threshold": 0.9,
        "scorer": result.scorer,
        "max_new_tokens": MAX_NEW,
        "limit": None,
        "n_candidates": len(TEXTS),
        "n_kept": len(expected),
        "n_continuations": len(expected),
        "n_others": len(TEXTS) - len(expected),
        "focus": "continuation",
    }


def test_dict_prompts_threshold_and_limit(llama, tokenizer, generations):
    table, scorer = content_scorer(generations)
    prompts = [{"prompt": text, "toxicity": 0.8} for text in TEXTS]
    loose = behavior_references(
        llama, tokenizer, prompts, threshold=0.5, max_new_tokens=MAX_NEW, scorer=scorer, progress=False
    )
    assert loose.kept == [i for i, item in enumerate(generations) if table[item["continuation"]] >= 0.5]
    limited = behavior_references(
        llama,
        tokenizer,
        prompts,
        max_new_tokens=MAX_NEW,
        scorer=scorer,
        limit=1,
        batch_size=2,
        progress=False,
    )
    first = next(i for i, item in enumerate(generations) if table[item["continuation"]] >= 0.9)
    assert limited.kept == [first] and limited.n_kept == len(limited) == 1
    assert limited.n_candidates == (first // 2 + 1) * 2  # stops after the batch that filled the limit


def test_sampled_references_are_kept_among_every_sampled_continuation(llama, tokenizer):
    sampling = Sampling(n=3, seed=7)
    sampled = []  # one generate call per batch of prompts, each drawing from the seeded generator
    for start in range(0, len(TEXTS), 2):
        sampled += generate_continuations(
            llama, tokenizer, TEXTS[start : start + 2], max_new_tokens=MAX_NEW, batch_size=2,
            sampling=sampling, progress=False,
        )  # fmt: skip
    table, scorer = content_scorer(sampled)
    result = behavior_references(
        llama, tokenizer, TEXTS, max_new_tokens=MAX_NEW, scorer=scorer, batch_size=2, sampling=sampling,
        progress=False,
    )  # fmt: skip
    shown = [bool(item["continuation_ids"]) and table[item["continuation"]] >= 0.9 for item in sampled]
    expected = [i for i, kept in enumerate(shown) if kept]
    assert result.n_candidates == 3 * len(TEXTS) and result.kept == expected
    assert [pair["prompt"] for pair in result] == [TEXTS[i // 3] for i in expected]
    assert [pair["continuation"] for pair in result] == [sampled[i]["continuation"] for i in expected]
    assert result.n_continuations == len(expected) > 0
    with pytest.raises(ValueError, match="sampling= applies"):
        behavior_references(llama, tokenizer, TEXTS, behavior="bias", sampling=sampling)


def test_repetition_keeps_pairs_under_the_rur_threshold(llama, tokenizer, generations):
    result = behavior_references(
        llama, tokenizer, TEXTS, behavior="repetition", threshold=0.7, max_new_tokens=MAX_NEW, progress=False
    )
    rurs = [response_uniqueness_ratio(item["continuation_ids"]) for item in generations]
    expected = [i for i, value in enumerate(rurs) if value < 0.7]
    assert 0 < len(expected) < len(TEXTS)  # this random Llama loops on some prompts only
    assert result.kept == expected and result.scores == rurs
    assert result.scorer == "rur" and result.threshold == 0.7
    with pytest.raises(ValueError, match="scorer= applies"):
        behavior_references(llama, tokenizer, TEXTS, behavior="repetition", scorer=lambda t: [0.0] * len(t))


def test_empty_continuations_are_never_kept(tokenizer, generations):
    model = make_model("llama")
    eos = generations[0]["continuation_ids"][0]
    model.generation_config.eos_token_id = eos  # the first prompt's continuation becomes empty
    # Thresholds that every non-empty continuation passes
    for behavior, scorer, threshold in (
        ("toxicity", lambda texts: [1.0] * len(texts), 0.0),
        ("repetition", None, 1.01),
    ):
        result = behavior_references(
            model,
            tokenizer,
            TEXTS,
            behavior=behavior,
            threshold=threshold,
            scorer=scorer,
            max_new_tokens=MAX_NEW,
            progress=False,
        )
        assert 0 not in result.kept and len(result.kept) >= 1
    assert math.isnan(result.scores[0])


def test_a_behavior_set_is_a_reference_set_explaining_continuations_only(llama, tokenizer, generations):
    _, scorer = content_scorer(generations)
    result = behavior_references(
        llama, tokenizer, TEXTS, max_new_tokens=MAX_NEW, scorer=scorer, progress=False
    )
    assert isinstance(result, BehaviorSet)
    samples = tokenize(result, tokenizer, max_length=64)
    for sample, pair in zip(samples, result, strict=True):
        assert sample.explain_from == len(tokenizer(pair["prompt"])["input_ids"])
        assert sample.n_explained == len(
            tokenizer(pair["continuation"], add_special_tokens=False)["input_ids"]
        )


def test_bad_arguments(llama, tokenizer):
    with pytest.raises(ValueError, match="Unknown behavior"):
        behavior_references(llama, tokenizer, TEXTS, behavior="sycophancy")
    with pytest.raises(ValueError, match="limit"):
        behavior_references(llama, tokenizer, TEXTS, limit=0)
    with pytest.raises(ValueError, match="No prompts"):
        behavior_references(llama, tokenizer, [], scorer=lambda texts: [])


def _hand_made(behavior: str, continuations: list[str], threshold: float = 0.5) -> BehaviorSet:
    pairs = [{"prompt": f"Prompt {i}:", "continuation": text} for i, text in enumerate(continuations)]
    return BehaviorSet(
        pairs=pairs,
        behavior=behavior,
        threshold=threshold,
        scorer="hand",
        max_new_tokens=8,
        limit=None,
        n_candidates=len(pairs) + 3,
        scores=[1.0] * (len(pairs) + 3),
        kept=[2 * i + 1 for i in range(len(pairs))],
    )


def test_focus_on_words_makes_one_pair_per_toxic_word_in_its_context():
    references = _hand_made("toxicity", [" you are a damn fool.", " nothing bad here", " damn"])
    scored: list[list[str]] = []

    def bad_words(texts):
        scored.append(list(texts))
        return [0.9 if word.rstrip(".") in ("damn", "fool") else 0.1 for word in texts]

    focused = focus_on_words(references, scorer=bad_words)
    assert list(focused) == [
        {"prompt": "Prompt 0: you are a", "continuation": " damn"},
        {"prompt": "Prompt 0: you are a damn", "continuation": " fool."},
        {"prompt": "Prompt 2:", "continuation": " damn"},
    ]
    assert scored[0] == ["you", "are", "a", "damn", "fool."]  # each word scored alone, no space
    assert focused.kept == [1, 1, 5] and focused.n_continuations == 2 and focused.focus == "words"
    assert focused.summary()["n_kept"] == 3 and focused.scores == references.scores
    # one text per continuation for reading activations: the furthest-reaching pair of each
    assert focused.contexts() == [focused[1], focused[2]] and references.contexts() == list(references)
    # prompt + continuation is still a prefix of the text the model produced
    by_candidate = dict(zip(references.kept, references, strict=True))
    for candidate, pair in zip(focused.kept, focused, strict=True):
        original = by_candidate[candidate]
        assert (original["prompt"] + original["continuation"]).startswith(
            pair["prompt"] + pair["continuation"]
        )


def test_focus_on_words_explains_only_the_words_tokens(tokenizer):
    references = _hand_made("toxicity", [" the cat is bad bad."])
    focused = focus_on_words(references, scorer=lambda words: [float(w.startswith("bad")) for w in words])
    samples = tokenize(focused, tokenizer, max_length=64)
    assert [s.n_explained for s in samples] == [
        len(tokenizer(pair["continuation"], add_special_tokens=False)["input_ids"]) for pair in focused
    ]
    assert sum(s.n_explained for s in samples) < tokenize(references, tokenizer, max_length=64)[0].n_explained


def test_focus_on_words_for_repetition_flags_repeats_only():
    references = _hand_made("repetition", [" Yes yes, no. Yes!", " all different words"])
    focused = focus_on_words(references)
    assert [pair["continuation"] for pair in focused] == [" yes,", " Yes!"]
    assert focused[1]["prompt"] == "Prompt 0: Yes yes, no."
    with pytest.raises(ValueError, match="scorer= applies"):
        focus_on_words(references, scorer=lambda words: [1.0] * len(words))
    with pytest.raises(ValueError, match="already"):
        focus_on_words(focused)


def test_metric_direction_and_comparison():
    lower, higher, toward_half = Metric("a", False), Metric("b", True), Metric("c", False, ideal=0.5)
    assert lower.better(0.1, 0.2) and not lower.better(0.2, 0.2) and higher.better(0.3, 0.2)
    assert (
        toward_half.better(0.45, 0.7) and toward_half.better(0.55, 0.3) and not toward_half.better(0.2, 0.6)
    )
    assert (lower.direction, higher.direction) == ("lower is better", "higher is better")
    assert toward_half.direction == "lower is better, toward 0.5"


def test_registry_knows_each_behaviours_defaults():
    toxicity, repetition = get_behavior("toxicity"), get_behavior("repetition")
    assert (toxicity.default_threshold, toxicity.default_focus, toxicity.metric.name) == (
        0.9,
        "words",
        "toxic_rate",
    )
    assert (repetition.default_threshold, repetition.default_focus) == (0.5, "continuation")
    assert (
        repetition.metric_named("mean_rur").higher_is_better
        and not repetition.metric_named("perplexity").higher_is_better
    )
    assert len(toxicity.probes(3)) == 3 and all(isinstance(p, str) for p in repetition.probes())
