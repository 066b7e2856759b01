"""hf_sparc.workflows.circuits (with hf_sparc.data.tasks and hf_sparc.metrics.task): the IOI
generator, task scores, one-pass task relevance, the pruning curve and the circuit adapter."""

from __future__ import annotations

import json
import re

import evaluate
import pytest
import torch
import torch.nn.functional as F
from conftest import make_model
from peft import PeftModel
from transformers import AutoModelForCausalLM

import hf_sparc
from hf_sparc.data import tasks
from hf_sparc.metrics import metric_path, task
from hf_sparc.metrics._common import pad_batch
from hf_sparc.reports.writer import write_files
from hf_sparc.tuner.adapter_masks import adapter_masks
from hf_sparc.workflows import circuits

# single tokens of the tiny test tokenizer (the template words become <unk>, which is fine)
NAMES = ["cat", "dog", "mat", "house", "world", "hello"]


def _count(word: str, text: str) -> int:
    return len(re.findall(rf"\b{re.escape(word)}\b", text))


def test_ioi_is_deterministic_split_and_valid(tokenizer):
    ref = tasks.ioi_dataset(tokenizer, n=50, names=NAMES, split="reference", seed=3)
    dev = tasks.ioi_dataset(tokenizer, n=50, names=NAMES, split="dev", seed=3)
    test = tasks.ioi_dataset(tokenizer, n=50, names=NAMES, split="test", seed=3)
    every = tasks.ioi_dataset(tokenizer, n=50, names=NAMES, split="all", seed=3)
    assert ref == tasks.ioi_dataset(tokenizer, n=50, names=NAMES, split="reference", seed=3)
    assert ref != tasks.ioi_dataset(tokenizer, n=50, names=NAMES, split="reference", seed=4)
    assert (len(ref), len(dev), len(test)) == (25, 13, 12)
    assert sorted(map(str, ref + dev + test)) == sorted(map(str, every))
    for item in every:
        assert item["io"] != item["s"]
        assert _count(item["io"], item["prompt"]) == 1
        assert _count(item["s"], item["prompt"]) == 2
        assert (item["correct"], item["wrong"]) == (" " + item["io"], " " + item["s"])
    assert {item["prompt"].index(item["io"]) < item["prompt"].index(item["s"]) for item in every} == {
        True,
        False,
    }


def test_single_token_names_skip_unknown_and_multi_token(tokenizer):
    assert tasks.single_token_names(tokenizer, ["cat", "Mary", "dog"]) == ["cat", "dog"]
    with pytest.raises(ValueError, match="two single-token names"):
        tasks.ioi_dataset(tokenizer)  # no built-in name is in the tiny vocabulary


def test_logit_differences_match_a_direct_forward(tokenizer):
    model = make_model("llama")
    items = tasks.ioi_dataset(tokenizer, n=10, names=NAMES, split="all")
    diffs = task.logit_differences(model, tokenizer, items, batch_size=3, progress=False)
    for item, diff in zip(items, diffs.tolist(), strict=True):
        with torch.no_grad():
            logits = model(**tokenizer(item["prompt"], return_tensors="pt")).logits[0, -1]
        io, s = (tokenizer(item[k], add_special_tokens=False)["input_ids"][0] for k in ("correct", "wrong"))
        assert diff == pytest.approx(float(logits[io] - logits[s]), abs=1e-5)
    scores = task.task_scores(model, tokenizer, items, progress=False)
    assert scores == {
        "logit_diff": pytest.approx(float(diffs.mean()), abs=1e-6),
        "accuracy": float((diffs > 0).float().mean()),
        "n": 10,
    }
    metric = evaluate.load(metric_path("ioi"), keep_in_memory=True)
    result = metric.compute(
        prompts=[i["prompt"] for i in items],
        correct=[i["correct"] for i in items],
        wrong=[i["wrong"] for i in items],
        model=model,
        tokenizer=tokenizer,
        progress=False,
    )
    assert result == pytest.approx(scores, abs=1e-6)  # other batch size: rounding only


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ({"prompt": "the cat", "correct": " dog"}, "string 'prompt', 'correct' and 'wrong'"),
        ({"prompt": "the cat", "correct": " dog", "wrong": " dog"}, "same token"),
        ({"prompt": "the cat", "correct": "", "wrong": " dog"}, "must not be empty"),
    ],
)
def test_bad_custom_items(tokenizer, item, message):
    with pytest.raises(ValueError, match=message):
        task.task_scores(make_model("llama"), tokenizer, [item], progress=False)


@pytest.fixture(scope="module")
def trained(tokenizer):
    """A tiny Llama trained for a few seconds to solve the tiny IOI task (a random one is at chance)."""
    model = make_model("llama").train()
    torch.manual_seed(0)  # the batches
    items = tasks.ioi_dataset(tokenizer, n=400, names=NAMES, split="all", seed=1)
    prompts = [tokenizer(i["prompt"])["input_ids"] for i in items]
    answers = torch.tensor([tokenizer(i["correct"], add_special_tokens=False)["input_ids"][0] for i in items])
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(250):
        pick = torch.randint(0, len(items), (32,))
        ids, mask = pad_batch([prompts[i] for i in pick], 0, "right", torch.device("cpu"))
        logits = model(input_ids=ids, attention_mask=mask).logits[torch.arange(32), mask.sum(1) - 1]
        loss = F.cross_entropy(logits, answers[pick])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def _split(tokenizer, split):
    return tasks.ioi_dataset(tokenizer, n=60, names=NAMES, split=split)


@pytest.mark.parametrize(("method", "level"), [("lrp", "neuron"), ("gradient", "neuron"), ("lrp", "head")])
def test_curve_is_monotone_and_the_circuit_passes(trained, tokenizer, method, level):
    result = circuits.discover_circuit(
        trained, tokenizer, _split(tokenizer, "reference"), _split(tokenizer, "dev"),
        method=method, level=level, progress=False,
    )  # fmt: skip
    baseline = result.baseline
    assert baseline.pruned == 0 and baseline.accuracy > 0.9
    pruned = [p.pruned for p in result.points]
    assert pruned == sorted(set(pruned)) and pruned[-1] < result.total
    # pruning more of the least relevant units never helps by more than the tolerance
    tolerance = 0.1 * baseline.logit_diff
    for earlier, later in zip(result.points, result.points[1:], strict=False):
        assert later.logit_diff <= earlier.logit_diff + tolerance, (earlier, later)
    assert result.points[-1].logit_diff < 0.5 * baseline.logit_diff
    assert result.circuit.accuracy >= 0.9 * baseline.accuracy
    assert result.masks is not None and result.masks.total() == result.circuit.pruned
    assert result.kept == result.total - result.circuit.pruned
    assert result.to_dict()["kept"] == result.kept


def test_circuit_adapter_round_trips(trained, tokenizer, tmp_path):
    evaluation = _split(tokenizer, "dev")
    result = circuits.discover_circuit(
        trained,
        tokenizer,
        _split(tokenizer, "reference"),
        evaluation,
        method="lrp",
        level="neuron",
        progress=False,
    )
    trained.save_pretrained(tmp_path / "base")
    peft_model = hf_sparc.apply_masks(trained, result.masks)
    try:
        hf_sparc.save_adapter(peft_model, tmp_path / "circuit")
        expected = task.logit_differences(peft_model, tokenizer, evaluation, progress=False)
    finally:
        peft_model.unload()
    loaded = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tmp_path / "base"), tmp_path / "circuit"
    )
    assert torch.allclose(
        task.logit_differences(loaded, tokenizer, evaluation, progress=False), expected, atol=1e-5
    )
    scores = task.task_scores(loaded, tokenizer, evaluation, progress=False)
    assert scores["accuracy"] == result.circuit.accuracy
    write_files(tmp_path, {"curve.png": circuits.curve_figure([result])})
    assert (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"


def test_argument_checks(tokenizer):
    model = make_model("llama")
    items = _split(tokenizer, "all")
    with pytest.raises(ValueError, match="threshold"):
        circuits.discover_circuit(model, tokenizer, items, items, threshold=0, progress=False)
    with pytest.raises(ValueError, match="fractions"):
        circuits.discover_circuit(model, tokenizer, items, items, fractions=[0.5, 1.0], progress=False)


def test_circuit_cli_end_to_end_and_inspect(trained, tokenizer, tmp_path, capsys):
    from hf_sparc.cli import main

    trained.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    task = tmp_path / "task.jsonl"
    task.write_text(
        "\n".join(json.dumps(i) for i in tasks.ioi_dataset(tokenizer, n=60, names=NAMES, split="all"))
    )
    common = ["--model", str(tmp_path / "model"), "--batch-size", "16"]
    out = tmp_path / "circuit"
    assert main(["circuit", *common, "--task", str(task), "--level", "neuron", "--output", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["circuit"]["accuracy"] >= 0.9 * report["baseline"]["accuracy"]
    assert (out / "curve.png").is_file() and "Circuit:" in (out / "report.md").read_text()
    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tmp_path / "model"), out)
    masks = adapter_masks(loaded)
    assert masks.total() == report["circuit"]["pruned"] == report["total"] - report["kept"]

    texts = tmp_path / "texts.txt"
    texts.write_text(
        "\n".join(i["prompt"] for i in tasks.ioi_dataset(tokenizer, n=8, names=NAMES, split="all"))
    )
    inspected = tmp_path / "inspect"
    argv = ["inspect", str(out), *common, "--texts", str(texts), "--top-k", "2", "--output", str(inspected)]
    assert main(argv) == 0
    units = json.loads((inspected / "units.json").read_text())
    assert units["modules"] == {name: idx.tolist() for name, idx in masks.items()}
    assert [(u["module"], u["unit"]) for u in units["units"]] == [
        (name, i) for name, idx in masks.items() for i in idx.tolist()
    ]
    assert (inspected / "layers.png").is_file() and "### `" in (inspected / "inspect.md").read_text()

    capsys.readouterr()
    assert main(["circuit", *common, "--task", "ioi", "--output", str(tmp_path / "nope")]) == 2
    assert main(["inspect", str(tmp_path / "model"), *common, "--output", str(tmp_path / "nope")]) == 2
    # progress bars also go to stderr; the error is one line
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 2 and "single-token names" in errors[0] and "adapter_config.json" in errors[1]
    assert not (tmp_path / "nope").exists()
