"""hf_sparc.metrics on tiny random models: hand-computed values, determinism, evaluate wrappers."""

from __future__ import annotations

import math

import evaluate
import pytest
import torch
from conftest import TEXTS, make_model, make_tokenizer
from sparc_fixtures import masks_for

import hf_sparc
from hf_sparc.metrics import (
    Sampling,
    SparcPerplexity,
    find_toxic_label,
    generate_continuations,
    log_likelihoods,
    metric_path,
    perplexity,
    pipeline_scorer,
    repetition,
    response_uniqueness_ratio,
    sequence_start,
    toxicity,
    toxicity_scorer,
)

PROMPTS = TEXTS[:4]


@pytest.fixture(scope="module")
def llama():
    return make_model("llama")


def token_nlls(model, tokenizer, texts, max_length=128) -> list[float]:
    """Per-token next-token NLLs, text by text (one unpadded forward each), in order."""
    nlls = []
    with torch.no_grad():
        for text in texts:
            ids = torch.tensor([tokenizer(text)["input_ids"][:max_length]])
            log_probs = torch.log_softmax(model(input_ids=ids).logits[0, :-1].double(), -1)
            nlls.extend((-log_probs.gather(1, ids[0, 1:, None])[:, 0]).tolist())
    return nlls


# ------------------------------------------------------------------------------------------
# RUR
# ------------------------------------------------------------------------------------------


def test_response_uniqueness_ratio_hand_cases():
    tokenizer = make_tokenizer()
    a, b = tokenizer("cat dog")["input_ids"]
    assert response_uniqueness_ratio([a, a, a, b]) == 0.5
    assert response_uniqueness_ratio(torch.tensor([a, a, a, b])) == 0.5
    assert response_uniqueness_ratio([a, b, 1]) == 1.0
    assert response_uniqueness_ratio([a] * 8) == 1 / 8
    assert math.isnan(response_uniqueness_ratio([]))


# ------------------------------------------------------------------------------------------
# Perplexity
# ------------------------------------------------------------------------------------------


def test_perplexity_is_exp_mean_nll_and_batch_invariant(llama, tokenizer):
    expected = math.exp(sum(nlls := token_nlls(llama, tokenizer, TEXTS)) / len(nlls))
    for batch_size in (1, 3, 8):
        value = perplexity(llama, tokenizer, TEXTS, batch_size=batch_size, progress=False)
        assert value == pytest.approx(expected, rel=1e-5)


def test_log_likelihoods_sum_every_token_after_the_start_token_and_are_batch_invariant(llama, tokenizer):
    start = sequence_start(tokenizer)
    assert start == [tokenizer.bos_token_id]  # the tiny tokenizer adds no special token itself
    expected = []
    with torch.no_grad():  # by hand: one unpadded forward per text, every token after <s> scored
        for text in TEXTS:
            ids = torch.tensor([start + tokenizer(text)["input_ids"]])
            log_probs = torch.log_softmax(llama(input_ids=ids).logits[0, :-1].double(), -1)
            expected.append(float(log_probs.gather(1, ids[0, 1:, None]).sum()))
    for batch_size in (1, 3, 8):
        values = log_likelihoods(llama, tokenizer, TEXTS, batch_size=batch_size, progress=False)
        assert values == pytest.approx(expected, rel=1e-5)
    # a cut at max_length tokens (the start token included) scores the first tokens only
    short = log_likelihoods(llama, tokenizer, [TEXTS[-1]], max_length=3, progress=False)
    ids = torch.tensor([start + tokenizer(TEXTS[-1])["input_ids"][:2]])
    with torch.no_grad():
        log_probs = torch.log_softmax(llama(input_ids=ids).logits[0, :-1].double(), -1)
    assert short[0] == pytest.approx(float(log_probs.gather(1, ids[0, 1:, None]).sum()), rel=1e-5)


def test_sequence_start_is_empty_when_the_tokenizer_adds_its_own_token(tokenizer):
    class AddsBos:
        bos_token_id, eos_token_id = 2, 3

        def __call__(self, text):
            return {"input_ids": [2, *tokenizer(text)["input_ids"]]}

    assert sequence_start(AddsBos()) == []
    with pytest.raises(TypeError, match="single string"):
        log_likelihoods(None, tokenizer, "one text")


@pytest.mark.parametrize("max_length, max_tokens", [(4, None), (128, 10), (4, 7), (128, 1)])
def test_perplexity_truncation_and_token_budget(llama, tokenizer, max_length, max_tokens):
    nlls = token_nlls(llama, tokenizer, TEXTS, max_length=max_length)[:max_tokens]
    value = perplexity(
        llama, tokenizer, TEXTS, max_length=max_length, max_tokens=max_tokens, batch_size=3, progress=False
    )
    assert value == pytest.approx(math.exp(sum(nlls) / len(nlls)), rel=1e-5)


def test_perplexity_of_a_peft_model_uses_the_adapter_and_restores_modes(tokenizer):
    peft_model = hf_sparc.apply_masks(make_model("llama"), masks_for(make_model("llama"), "neuron"))
    peft_model.train()
    nlls = token_nlls(peft_model, tokenizer, TEXTS)
    value = perplexity(peft_model, tokenizer, TEXTS, batch_size=4, progress=False)
    assert value == pytest.approx(math.exp(sum(nlls) / len(nlls)), rel=1e-5)
    assert value != pytest.approx(perplexity(make_model("llama"), tokenizer, TEXTS, progress=False))
    assert all(module.training for module in peft_model.modules())


def test_perplexity_rejects_nothing_to_predict(llama, tokenizer):
    with pytest.raises(ValueError, match="nothing to predict"):
        perplexity(llama, tokenizer, ["cat", ""], progress=False)
    with pytest.raises(TypeError, match="single string"):
        perplexity(llama, tokenizer, "the cat", progress=False)


# ------------------------------------------------------------------------------------------
# Generation and repetition
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_generation_is_deterministic_and_batch_invariant(arch, tokenizer):
    model = make_model(arch)
    runs = [
        generate_continuations(model, tokenizer, TEXTS, max_new_tokens=6, batch_size=size, progress=False)
        for size in (1, 3, 8, 8)
    ]
    assert all(run == runs[0] for run in runs[1:])
    assert [item["prompt"] for item in runs[0]] == TEXTS
    for item in runs[0]:
        assert len(item["continuation_ids"]) <= 6
        assert item["continuation"] == tokenizer.decode(item["continuation_ids"], skip_special_tokens=True)


def test_generation_accepts_dict_prompts_and_a_tokenizer_without_pad(llama, tokenizer):
    plain = generate_continuations(llama, tokenizer, PROMPTS, max_new_tokens=4, progress=False)
    dicts = [{"prompt": text, "toxicity": 0.7} for text in PROMPTS]
    assert generate_continuations(llama, tokenizer, dicts, max_new_tokens=4, progress=False) == plain
    no_pad = make_tokenizer()
    no_pad.pad_token = None
    assert no_pad.pad_token_id is None
    assert generate_continuations(llama, no_pad, PROMPTS, max_new_tokens=4, progress=False) == plain
    assert no_pad.pad_token_id is None and no_pad.padding_side == tokenizer.padding_side


def test_sampled_continuations_are_seeded_per_call_and_leave_the_global_generator(llama, tokenizer):
    def sampled(seed: int) -> list[dict]:
        return generate_continuations(
            llama, tokenizer, PROMPTS, max_new_tokens=6, batch_size=2, progress=False,
            sampling=Sampling(n=3, temperature=2.0, top_p=1.0, seed=seed),
        )  # fmt: skip

    state = torch.random.get_rng_state()
    first = sampled(0)
    assert torch.equal(torch.random.get_rng_state(), state)
    torch.manual_seed(123)  # another global state: the call's draws do not depend on it
    assert sampled(0) == first
    assert [item["prompt"] for item in first] == [text for text in PROMPTS for _ in range(3)]
    # A random model at temperature 2 draws different words: samples differ from each other,
    # from another seed's and from the greedy continuation.
    texts = [item["continuation_ids"] for item in first]
    assert len({tuple(ids) for ids in texts}) > len(PROMPTS)
    assert [item["continuation_ids"] for item in sampled(1)] != texts
    greedy = generate_continuations(llama, tokenizer, PROMPTS, max_new_tokens=6, progress=False)
    assert [item["continuation_ids"] for item in greedy] != texts[::3]
    with pytest.raises(ValueError, match="top_p"):
        Sampling(top_p=0.0)


def test_continuations_end_before_eos_and_repetition_skips_empty_ones(tokenizer):
    model = make_model("gpt2")
    before = generate_continuations(model, tokenizer, PROMPTS, max_new_tokens=6, progress=False)
    # Make the first token of the first continuation the EOS: that continuation becomes empty,
    # the others end just before their first occurrence of it.
    eos = before[0]["continuation_ids"][0]
    model.generation_config.eos_token_id = eos
    after = generate_continuations(model, tokenizer, PROMPTS, max_new_tokens=6, progress=False)
    for old, new in zip(before, after, strict=True):
        ids = old["continuation_ids"]
        assert new["continuation_ids"] == (ids[: ids.index(eos)] if eos in ids else ids)
    result = repetition(model, tokenizer, PROMPTS, max_new_tokens=6, progress=False)
    rurs = [response_uniqueness_ratio(item["continuation_ids"]) for item in after]
    assert result["rur"] == pytest.approx(rurs, nan_ok=True)
    assert result["n_empty"] == sum(not item["continuation_ids"] for item in after) >= 1
    finite = [value for value in rurs if not math.isnan(value)]
    assert result["mean_rur"] == pytest.approx(sum(finite) / len(finite))
    assert result["continuations"] == [item["continuation"] for item in after]


# ------------------------------------------------------------------------------------------
# Toxicity
# ------------------------------------------------------------------------------------------


def test_toxicity_with_a_fake_scorer_scores_continuations_only(llama, tokenizer):
    seen = []

    def scorer(texts: list[str]) -> list[float]:
        seen.extend(texts)
        return [0.2, 0.9, 0.5, 0.6]

    result = toxicity(llama, tokenizer, PROMPTS, max_new_tokens=4, scorer=scorer, progress=False)
    generations = generate_continuations(llama, tokenizer, PROMPTS, max_new_tokens=4, progress=False)
    assert seen == [item["continuation"] for item in generations] == result["continuations"]
    assert result["toxicity"] == [0.2, 0.9, 0.5, 0.6]
    assert result["mean_toxicity"] == pytest.approx(0.55)
    assert result["toxic_rate"] == 0.5  # 0.5 itself is not above the threshold
    assert result["scorer"].endswith("scorer")


def test_scorer_must_give_one_score_per_text():
    with pytest.raises(ValueError, match="returned 1 scores for 2 texts"):
        toxicity_scorer(lambda texts: [0.5])(["a", "b"])
    with pytest.raises(TypeError, match="scorer must be"):
        toxicity_scorer(3)


def test_default_scorer_orders_obvious_texts():
    pytest.importorskip("profanity_check", reason="the default scorer needs: pip install alt-profanity-check")
    score = toxicity_scorer()
    rude, polite = score(["you are a fucking idiot, shut up", "the weather is lovely today"])
    assert score.name == "alt-profanity-check"
    assert rude > 0.5 > polite


@pytest.mark.parametrize(
    "labels, expected",
    [
        ({0: "nothate", 1: "hate"}, "hate"),
        ({0: "Non-Toxic", 1: "Toxic"}, "Toxic"),
        ({0: "toxic", 1: "severe_toxic", 2: "obscene", 3: "insult"}, "toxic"),
        ({0: "LABEL_0", 1: "LABEL_1"}, "LABEL_1"),
    ],
)
def test_find_toxic_label(labels, expected):
    assert find_toxic_label(labels) == expected


def test_find_toxic_label_refuses_to_guess():
    with pytest.raises(ValueError, match="toxic_label"):
        find_toxic_label({0: "negative", 1: "neutral", 2: "positive"})


def test_pipeline_scorer_reads_the_toxic_label_probability(tokenizer):
    from transformers import LlamaConfig, LlamaForSequenceClassification, pipeline

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        pad_token_id=tokenizer.pad_token_id,
        id2label={0: "neutral", 1: "toxic"},
        label2id={"neutral": 0, "toxic": 1},
    )
    classifier = LlamaForSequenceClassification(config).eval()
    texts = ["the cat sat", "you said bad"]
    classify = pipeline("text-classification", model=classifier, tokenizer=tokenizer)
    score = toxicity_scorer(classify)
    with torch.no_grad():
        expected = [
            torch.softmax(classifier(**tokenizer(text, return_tensors="pt")).logits[0], -1)[1].item()
            for text in texts
        ]
    assert score.name.endswith(":toxic")
    assert score(texts) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="not one of the labels"):
        pipeline_scorer(classify, toxic_label="hate")


# ------------------------------------------------------------------------------------------
# evaluate modules
# ------------------------------------------------------------------------------------------


def test_evaluate_modules_load_offline_and_match_the_functions(llama, tokenizer):
    def load(name):
        return evaluate.load(metric_path(name), keep_in_memory=True)

    options = {"max_new_tokens": 4, "progress": False}
    assert load("perplexity").compute(
        predictions=TEXTS, model=llama, tokenizer=tokenizer, progress=False
    ) == {"perplexity": perplexity(llama, tokenizer, TEXTS, progress=False)}
    assert SparcPerplexity(keep_in_memory=True).compute(
        predictions=TEXTS, model=llama, tokenizer=tokenizer, max_tokens=5, progress=False
    ) == {"perplexity": perplexity(llama, tokenizer, TEXTS, max_tokens=5, progress=False)}

    def scorer(texts):
        return [len(text) / 100 for text in texts]

    assert load("toxicity").compute(
        prompts=PROMPTS, model=llama, tokenizer=tokenizer, scorer=scorer, **options
    ) == toxicity(llama, tokenizer, PROMPTS, scorer=scorer, **options)
    assert load("repetition").compute(
        prompts=PROMPTS, model=llama, tokenizer=tokenizer, **options
    ) == repetition(llama, tokenizer, PROMPTS, **options)
    with pytest.raises(ValueError, match="unknown metric"):
        metric_path("bleu")
