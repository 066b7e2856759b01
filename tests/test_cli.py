"""The ``hf-sparc`` command line, end to end on a tiny random model saved to local files."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import TEXTS, make_model, make_tokenizer
from peft import PeftModel
from sparc_fixtures import assert_same_logits
from transformers import AutoModelForCausalLM

import hf_sparc
from hf_sparc.cli import main

UNDESIRED = ["bad bad bad dog", "very bad", "not good bad", "bad cat"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    model = make_model("llama")
    model.save_pretrained(root / "model")
    make_tokenizer().save_pretrained(root / "model")
    (root / "undesired.txt").write_text("\n".join(UNDESIRED) + "\n\n")
    (root / "general.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in TEXTS))
    return root


def _pruned_count(adapter_dir, model_dir):
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    peft_model = PeftModel.from_pretrained(base, adapter_dir)
    return sum(peft_model.peft_config["default"].module_counts.values()), peft_model


def test_correct_end_to_end_in_a_subprocess(workspace):
    out = workspace / "run"
    result = subprocess.run(
        [sys.executable, "-m", "hf_sparc.cli", "correct", "--model", str(workspace / "model"),
         "--undesired", str(workspace / "undesired.txt"), "--general", str(workspace / "general.jsonl"),
         "--level", "neuron", "--count", "5", "--output", str(out)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for name in ("adapter_config.json", "adapter_model.safetensors", "README.md", "sparc_config.json",
                 "masks.safetensors", "relevance_undesired.safetensors", "relevance_general.safetensors",
                 "report.json", "report.md"):  # fmt: skip
        assert (out / name).is_file(), name
    count, _ = _pruned_count(out, workspace / "model")
    assert count == 5
    report = json.loads((out / "report.json").read_text())
    assert report["pruned"] == 5 and sum(report["per_module"].values()) == 5
    assert report["references"]["undesired"]["n"] == len(UNDESIRED)
    assert "Pruned **5**" in (out / "report.md").read_text()


def test_select_attribute_export_commands(workspace, tmp_path):
    run = tmp_path / "run"
    common = ["--model", str(workspace / "model")]
    references = [
        "--undesired",
        str(workspace / "undesired.txt"),
        "--general",
        str(workspace / "general.jsonl"),
    ]
    assert main(["correct", *common, *references, "--count", "3", "--output", str(run)]) == 0
    assert main(["select", str(run), *common, "--count", "7", "--output", str(tmp_path / "seven")]) == 0
    assert _pruned_count(tmp_path / "seven", workspace / "model")[0] == 7

    assert main(["attribute", *common, "--texts", str(workspace / "general.jsonl"), "--method", "wanda",
                 "--level", "weight", "--output", str(tmp_path / "wanda.safetensors")]) == 0  # fmt: skip
    from hf_sparc import Relevance

    assert Relevance.load(tmp_path / "wanda.safetensors").method == "wanda"
    assert main(["attribute", *common, "--texts", str(workspace / "general.jsonl"), "--objective",
                 "next_token_logprob", "--output", str(tmp_path / "lp.safetensors")]) == 0  # fmt: skip
    assert Relevance.load(tmp_path / "lp.safetensors").info.settings["objective"] == "next_token_logprob"

    assert main(["export", str(run), "--merged", "--output", str(tmp_path / "merged"), *common]) == 0
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    _, peft_model = _pruned_count(run, workspace / "model")
    ids = make_tokenizer()(TEXTS[0], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert_same_logits(merged(input_ids=ids).logits, peft_model(input_ids=ids).logits)
    assert main(["export", str(run), "--ia3", "--output", str(tmp_path / "ia3"), *common]) == 0
    assert json.loads((tmp_path / "ia3" / "adapter_config.json").read_text())["peft_type"] == "IA3"


def test_user_mistakes_exit_2_with_one_line_and_leave_no_output(workspace, tmp_path, capsys):
    out = tmp_path / "out"
    common = ["--model", str(workspace / "model"), "--output", str(out)]
    cases = [
        (["correct", *common, "--undesired", str(tmp_path / "missing.txt")], "No such file"),
        (
            ["correct", *common, "--undesired", str(workspace / "model" / "model.safetensors")],
            "Unsupported file type",
        ),
        (
            ["correct", "--model", str(tmp_path / "nope"), "--output", str(out), "--general", "general"],
            "nope",
        ),
        (["correct", *common, "--general", str(workspace / "general.jsonl"), "--count", "-3"], "positive"),
        (["correct", *common, "--general", str(workspace / "general.jsonl"), "--count", "100000"], "100000"),
        (["select", str(tmp_path), *common, "--count", "3"], "sparc_config.json"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if "error" in line]
        assert len(errors) == 1 and message in errors[0] and "Traceback" not in err, err
        assert not out.exists() and not list(tmp_path.glob(".out.*")), argv
    out.mkdir()
    (out / "keep.txt").write_text("x")
    assert main(["correct", *common, "--general", str(workspace / "general.jsonl")]) == 2
    assert "--overwrite" in capsys.readouterr().err and (out / "keep.txt").exists()
    with pytest.raises(SystemExit) as exit_info:
        main(["correct", "--bogus"])
    assert exit_info.value.code == 2
    # --debug: the same mistake raises, with its traceback
    with pytest.raises(FileNotFoundError):
        main(["--debug", "correct", *common, "--overwrite", "--undesired", str(tmp_path / "missing.txt")])


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == f"hf-sparc {hf_sparc.__version__}"


def test_evaluate_and_correct_with_eval_set_report_perplexity(workspace, tmp_path, capsys):
    from hf_sparc.metrics import perplexity

    common = ["--model", str(workspace / "model")]
    texts = str(workspace / "general.jsonl")
    assert main(["evaluate", *common, "--texts", texts]) == 0
    printed = json.loads(capsys.readouterr().out)
    model = AutoModelForCausalLM.from_pretrained(workspace / "model")
    rows = [json.loads(line) for line in (workspace / "general.jsonl").read_text().splitlines()]
    expected = perplexity(model, make_tokenizer(), [row["text"] for row in rows], progress=False)
    assert printed["perplexity"] == pytest.approx(expected, rel=1e-6)

    run = tmp_path / "run"
    assert main(["correct", *common, "--general", texts, "--undesired", str(workspace / "undesired.txt"),
                 "--count", "10", "--eval", texts, "--output", str(run)]) == 0  # fmt: skip
    capsys.readouterr()
    report = json.loads((run / "report.json").read_text())
    assert report["metrics_before"]["perplexity"] == pytest.approx(expected, rel=1e-6)
    assert report["metrics_after"]["perplexity"] != report["metrics_before"]["perplexity"]
    assert main(["evaluate", *common, "--adapter", str(run), "--texts", texts]) == 0
    after = json.loads(capsys.readouterr().out)
    assert after["perplexity"] == pytest.approx(report["metrics_after"]["perplexity"], rel=1e-6)


def test_scaling_options_reach_attribution_and_keep_the_result(workspace, tmp_path):
    from hf_sparc import Relevance

    common = ["attribute", "--model", str(workspace / "model"), "--texts", str(workspace / "general.jsonl"),
              "--batch-size", "2"]  # fmt: skip
    assert main([*common, "--output", str(tmp_path / "plain.safetensors")]) == 0
    state = tmp_path / "state"
    scaled_options = ["--gradient-checkpointing", "--checkpoint-dir", str(state), "--checkpoint-every", "1"]
    assert main([*common, *scaled_options, "--output", str(tmp_path / "scaled.safetensors")]) == 0
    assert any(state.rglob("*")), "no attribution state was checkpointed"
    plain = Relevance.load(tmp_path / "plain.safetensors")
    scaled = Relevance.load(tmp_path / "scaled.safetensors")
    assert all(torch.equal(plain[name], scaled[name]) for name in plain)
    out = tmp_path / "behavior"
    code = main(["correct", "--behavior", "toxicity", "--model", str(workspace / "model"), "--checkpoint-dir",
                 str(state), "--output", str(out)])  # fmt: skip
    assert code == 2 and not out.exists()


def test_config_file_gives_the_options_and_the_command_line_wins(tmp_path, monkeypatch, capsys):
    import hf_sparc.cli.correct as correct

    seen = []
    monkeypatch.setattr(correct, "_run", lambda args: seen.append(args))
    (tmp_path / "run.yaml").write_text(
        "model: my-model\ncount: 7\ntarget-modules: [up_proj]\nabsolute: true\noutput: o\n"
    )
    (tmp_path / "run.json").write_text('{"model": "json-model", "level": "head", "output": "o"}')
    assert main(["--config", str(tmp_path / "run.yaml"), "correct", "--count", "9"]) == 0
    args = seen[-1]
    assert (args.model, args.count, args.target_modules, args.absolute) == ("my-model", 9, ["up_proj"], True)
    assert main([f"--config={tmp_path / 'run.json'}", "correct"]) == 0
    assert (seen[-1].model, seen[-1].level) == ("json-model", "head")

    (tmp_path / "bad.yaml").write_text("modle: typo\n")
    assert main(["--config", str(tmp_path / "bad.yaml"), "correct"]) == 2
    assert "'modle' is not an option of hf-sparc correct" in capsys.readouterr().err
    assert main(["--config", str(tmp_path / "missing.yaml"), "correct"]) == 2


def test_top_level_help_and_version_answer_without_importing_torch():
    import subprocess
    import sys

    import hf_sparc_cli

    code = (
        "import sys, hf_sparc_cli\n"
        "try:\n    hf_sparc_cli.main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules and 'hf_sparc' not in sys.modules, 'imported the package'\n"
    )
    for flag in ("--help", "--version"):
        done = subprocess.run([sys.executable, "-c", code, flag], capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
        assert ("COMMAND" in done.stdout) if flag == "--help" else done.stdout.startswith("hf-sparc ")
    # the fast help is the real parser's help: same global options, commands and texts
    fast, commands = hf_sparc_cli.top_parser()
    for name, text in hf_sparc_cli.COMMAND_HELP.items():
        commands.add_parser(name, help=text)
    assert fast.format_help() == hf_sparc.cli.build_parser().format_help()
