"""Counts sweep and the built-in behaviour experiment from the command line, on a tiny model."""

from __future__ import annotations

import json

import pytest
from conftest import make_model, make_tokenizer
from peft import PeftModel
from test_correction import SMALL
from transformers import AutoModelForCausalLM

from hf_sparc.cli import main
from hf_sparc.workflows.correction import CorrectionSettings, run_correction
from hf_sparc.workflows.sweep import run_sweep

SMALL_OPTIONS = ["--candidates", "4", "--n-general", "4", "--eval-prompts", "4", "--eval-texts", "4",
                 "--max-new-tokens", "4", "--max-length", "16", "--batch-size", "4",
                 "--tasks", "none"]  # fmt: skip


def everything_is_toxic(texts):
    return [1.0] * len(texts)


@pytest.mark.parametrize("budget", [0.0, 10.0])
def test_sweep_measures_every_count_and_picks_within_the_budget(tokenizer, tmp_path, budget):
    model = make_model("llama")
    settings = CorrectionSettings(controls=("random",), random_seeds=2, **SMALL)
    result = run_sweep(
        model, tokenizer, settings, counts=[8, 2, 4], budget=budget, scorer=everything_is_toxic
    )
    assert [(p.method, p.count) for p in result.points] == [
        ("lrp", 2), ("lrp", 4), ("lrp", 8), ("random", 2), ("random", 4), ("random", 8)
    ]  # fmt: skip
    assert all(p.metrics["pruned"] == p.count for p in result.points)
    assert result.points[3].sd is not None and result.points[0].sd is None
    limit = result.base["perplexity"] * (1 + budget)
    allowed = [p for p in result.points if p.method == "lrp" and p.metrics["perplexity"] <= limit]
    if allowed:
        best = min(p.metrics["toxic_rate"] for p in allowed)
        assert result.pick is not None and result.pick.metrics["toxic_rate"] == best
        assert result.pick.method == "lrp" and result.pick_masks.total() == result.pick.count
    else:
        assert result.pick is None and result.pick_masks is None
    if budget == 10.0:  # perplexity of a tiny random model cannot grow 11-fold by cutting 8 neurons
        assert result.pick is not None
    result.save(tmp_path, "sweep")
    assert (tmp_path / "pareto.png").stat().st_size > 1000
    saved = json.loads((tmp_path / "report.json").read_text())
    assert len(saved["points"]) == 6 and saved["budget"] == budget
    assert "| base | 0 |" in (tmp_path / "report.md").read_text()


def test_sweep_refuses_bad_grids_before_any_work(tokenizer):
    model = make_model("llama")
    with pytest.raises(ValueError, match="counts"):
        run_sweep(model, tokenizer, counts=[0, 5])
    with pytest.raises(ValueError, match="budget"):
        run_sweep(model, tokenizer, counts=[5], budget=-0.1)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("behavior") / "model"
    make_model("llama").save_pretrained(root)
    make_tokenizer().save_pretrained(root)
    return root


def test_correct_behavior_writes_adapter_report_plots_and_unit_insight(model_dir, tmp_path):
    out = tmp_path / "run"
    code = main(["correct", "--behavior", "repetition", "--model", str(model_dir), "--count", "6",
                 "--controls", "magnitude", "random", "--random-seeds", "2", "--threshold", "1.01",
                 *SMALL_OPTIONS, "--output", str(out)])  # fmt: skip
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert list(report["rows"]) == ["base", "lrp", "magnitude", "random", "random (unprotected)"]
    assert report["pruned"] == 6 and report["settings"]["protect_general"] == 0.5
    assert report["settings"]["split"] == "dev"  # choices are made on dev: the default
    assert all(row["pruned"] == 6 for name, row in report["rows"].items() if name != "base")
    for name in ("plot.png", "layers.png", "units.json", "adapter_config.json", "report.md"):
        assert (out / name).is_file(), name
    units = json.loads((out / "units.json").read_text())
    listed = sorted((u["module"], u["unit"]) for u in units["units"])
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    adapter = PeftModel.from_pretrained(base, out)
    masks = adapter.peft_config["default"].module_counts
    assert len(listed) == 6 == sum(masks.values())
    markdown = (out / "report.md").read_text()
    assert "## What the cut units respond to" in markdown and "| lrp |" in markdown


def test_correct_behavior_refuses_mixed_inputs_and_leaves_no_output(model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["correct", "--behavior", "toxicity", "--undesired", "x.txt", "--model", str(model_dir),
                 "--output", str(out)])  # fmt: skip
    assert code == 2 and not out.exists()
    assert "do not combine" in capsys.readouterr().err
    code = main(["correct", "--split", "test", "--undesired", "x.txt", "--general", "y.txt",
                 "--model", str(model_dir), "--output", str(out)])  # fmt: skip
    assert code == 2 and not out.exists()
    assert "--split applies to --behavior runs" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: only the held-out splits, and no "evaluation" any more
        main(["sweep", "--behavior", "repetition", "--split", "evaluation", "--model", str(model_dir)])
    assert "argument --split: invalid choice: 'evaluation'" in capsys.readouterr().err


def test_sweep_command_saves_the_pick(model_dir, tmp_path):
    out = tmp_path / "sweep"
    code = main(["sweep", "--behavior", "repetition", "--model", str(model_dir), "--counts", "2", "4",
                 "--budget", "10", "--threshold", "1.01", "--split", "test", *SMALL_OPTIONS,
                 "--output", str(out)])  # fmt: skip
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert [p["count"] for p in report["points"]] == [2, 4]
    assert report["settings"]["split"] == "test"
    assert "Held-out data: the locked **test** split" in (out / "report.md").read_text()
    assert report["pick"] is not None and (out / "pareto.png").is_file()
    assert "## What the cut units respond to" in (out / "report.md").read_text()
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    adapter = PeftModel.from_pretrained(base, out / "adapter")
    assert sum(adapter.peft_config["default"].module_counts.values()) == report["pick"]["count"]


def test_correct_behavior_dampens_and_saves_a_soft_adapter(model_dir, tmp_path, capsys):
    out = tmp_path / "soft"
    code = main(["correct", "--behavior", "repetition", "--model", str(model_dir), "--count", "6",
                 "--controls", "random", "--random-seeds", "1", "--threshold", "1.01", "--dampen", "0.5",
                 "--no-aura", *SMALL_OPTIONS, "--output", str(out)])  # fmt: skip
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["dampen"] == 0.5 and report["settings"]["aura"] is False
    assert report["rules"]["lrp"].endswith("dampened to 0.5")
    assert json.loads((out / "adapter_config.json").read_text())["soft"] is True
    adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), out)
    layer = next(m for m in adapter.modules() if hasattr(m, "pruning_scales") and len(m.pruning_scales))
    assert bool((layer.scales("default") == 0.5).all())

    code = main(["correct", "--method", "aura", "--undesired", "x.txt", "--general", "y.txt",
                 "--model", str(model_dir), "--output", str(tmp_path / "aura")])  # fmt: skip
    assert code == 2 and "--method aura needs --behavior" in capsys.readouterr().err


def test_correct_behavior_explains_the_objective_asked_for(model_dir, tmp_path, capsys):
    out = tmp_path / "logprob"
    code = main(["correct", "--behavior", "repetition", "--model", str(model_dir), "--count", "6",
                 "--controls", "gradient", "--threshold", "1.01", "--objective", "next_token_logprob",
                 "--no-aura", *SMALL_OPTIONS, "--output", str(out)])  # fmt: skip
    assert code == 0
    assert json.loads((out / "report.json").read_text())["settings"]["objective"] == "next_token_logprob"
    config = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), out).peft_config
    assert config["default"].provenance["settings"]["objective"] == "next_token_logprob"
    with pytest.raises(SystemExit):  # argparse
        main(["correct", "--behavior", "repetition", "--model", str(model_dir), "--objective", "entropy"])
    assert "argument --objective: invalid choice: 'entropy'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="Unknown objective"):
        run_correction(None, None, CorrectionSettings(objective="entropy"))
