"""Smoke tests of the example scripts in examples/, on a tiny random Llama saved to a folder.

Each script's ``main(argv)`` runs in-process with tiny sizes; the Hub path of
``publish_adapter.py`` runs as a real script in a subprocess against the loopback Hub of
tests/hub_server.py (no network). Thresholds keep every continuation (toxicity >= 0.0,
RUR < 1.01), so the undesired references are never empty on a random model.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TEXTS, make_model, make_tokenizer
from hub_server import HubServer
from peft import PeftModel
from sparc_fixtures import assert_same_logits
from transformers import AutoModelForCausalLM

import hf_sparc  # noqa: F401  (registers the SPARC adapter type with PEFT)
from hf_sparc.cli import main as cli_main

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SCRIPTS = ("demo", "detoxify", "reduce_repetition", "finetune_pruned", "publish_adapter")
TINY = ["--max-new-tokens", "4", "--max-length", "24", "--batch-size", "4"]
CORRECTION = [*TINY, "--candidates", "4", "--general", "3", "--eval-prompts", "3", "--eval-texts", "3"]


@pytest.fixture(scope="module")
def examples():
    """The example scripts as modules (they import their helper ``_common`` from their folder)."""
    sys.path.insert(0, str(EXAMPLES))
    try:
        modules = {}
        for name in SCRIPTS:
            spec = importlib.util.spec_from_file_location(f"hf_sparc_example_{name}", EXAMPLES / f"{name}.py")
            modules[name] = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(modules[name])
        yield modules
    finally:
        sys.path.remove(str(EXAMPLES))
        sys.modules.pop("_common", None)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("examples") / "tiny-llama"
    make_model("llama").save_pretrained(folder)
    make_tokenizer().save_pretrained(folder)
    return folder


def load_adapter(tiny: Path, adapter: Path):
    """The saved adapter on a fresh base model, and its total pruned count."""
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny), adapter).eval()
    config = model.peft_config[model.active_adapters[0]]
    return model, config, sum(config.module_counts.values())


def logits(model, text: str = TEXTS[0]) -> torch.Tensor:
    ids = make_tokenizer()(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model(ids).logits


def assert_finite(rows: dict[str, float]) -> None:
    assert rows and all(isinstance(v, float) and math.isfinite(v) for v in rows.values()), rows


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_shows_workflow_and_defaults(examples, name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        examples[name].main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "Workflow" in text and "--model" in text and "(default: " in text
    assert "smollm2-135m-instruct" in text


def test_detoxify(examples, tiny, tmp_path, capsys):
    out = tmp_path / "detox"
    argv = ["--model", str(tiny), "--count", "5", "--threshold", "0.0", *CORRECTION, "--output", str(out)]
    result = examples["detoxify"].main(argv)
    assert result["references"]["n_kept"] >= 1 and result["pruned"] == 5
    # threshold 0: every word is toxic, so each continuation gives at least one explained word
    references = result["references"]
    assert references["focus"] == "words" and references["n_kept"] >= references["n_continuations"] >= 1
    for row in (result["before"], result["after"]):
        assert_finite(row)
        assert set(row) == {
            "toxic_rate", "mean_toxicity", "toxic_rate_jigsaw", "mean_toxicity_jigsaw", "perplexity"
        }  # fmt: skip
        assert 0 <= row["toxic_rate"] <= 1
    assert "| toxic_rate |" in capsys.readouterr().out

    model, config, pruned = load_adapter(tiny, out)
    assert (pruned, config.level) == (5, "neuron")
    assert all(name.endswith("mlp.up_proj") for name in config.module_counts)
    assert_same_logits(logits(model), logits(result["peft_model"]))
    assert "mean_toxicity (after)" in (out / "README.md").read_text()

    with pytest.raises(SystemExit):  # refuses to overwrite the adapter before doing any work
        examples["detoxify"].main(argv)


def test_reduce_repetition_prunes_up_projection_weights(examples, tiny, tmp_path):
    out = tmp_path / "repetition"
    # --fraction 0.003 of the 2 x 48 x 32 up-projection weights: round(9.2) = 9
    argv = ["--model", str(tiny), "--fraction", "0.003", "--threshold", "1.01", *CORRECTION]
    result = examples["reduce_repetition"].main([*argv, "--output", str(out)])
    assert result["references"]["n_kept"] >= 1
    assert (result["level"], result["pruned"], result["of"]) == ("weight", 9, 2 * 48 * 32)
    for row in (result["before"], result["after"]):
        assert_finite(row)
        assert set(row) == {"mean_rur", "perplexity"} and 0 < row["mean_rur"] <= 1

    model, config, pruned = load_adapter(tiny, out)
    assert (pruned, config.level) == (9, "weight")
    assert all(name.endswith("mlp.up_proj") for name in config.module_counts)
    assert_same_logits(logits(model), logits(result["peft_model"]))


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_finetune_pruned_keeps_pruned_weights_zero(examples, tiny, lora):
    argv = ["--model", str(tiny), "--count", "6", "--general", "3", "--steps", "2", "--train-texts", "4"]
    argv += ["--eval-texts", "2", "--batch-size", "2", "--max-length", "24", "--learning-rate", "1e-3"]
    result = examples["finetune_pruned"].main(argv + (["--lora"] if lora else []))
    assert result["steps"] == 2 and result["pruned"] == 6
    assert result["pruned_all_zero"] and result["changed_weights"] > 0
    assert_finite(result["perplexity"])
    # independent of the script's own check: every pruned up-projection row is exactly zero
    model, masks = result["model_out"], result["masks"]
    assert masks.level == "neuron" and masks.total() == 6
    for name, index in masks.items():
        assert torch.count_nonzero(model.get_submodule(name).weight[index]) == 0


def test_publish_adapter_quick_cut_and_run_dir(examples, tiny, tmp_path):
    out = tmp_path / "published"
    result = examples["publish_adapter"].main(
        ["--model", str(tiny), "--method", "magnitude", "--count", "5", "--output", str(out)]
    )
    assert result["files"] == ["README.md", "adapter_config.json", "adapter_model.safetensors"]
    assert result["pruned"] == 5 and len(result["identical"]) == 2
    assert all(result["identical"].values()) and result["differs_from_base"]
    assert load_adapter(tiny, out)[2] == 5

    # from an `hf-sparc correct` run folder: only the adapter is published, with its metrics
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(TEXTS) + "\n")
    run = tmp_path / "run"
    common = ["--model", str(tiny), "--max-length", "24", "--count", "3", "--output", str(run)]
    assert cli_main(["correct", *common, "--undesired", str(texts), "--general", str(texts)]) == 0
    out = tmp_path / "from-run"
    result = examples["publish_adapter"].main(["--run-dir", str(run), "--output", str(out)])
    assert result["base_model"] == str(tiny) and result["pruned"] == 3
    assert all(result["identical"].values())
    assert not (out / "masks.safetensors").exists() and load_adapter(tiny, out)[2] == 3


def test_publish_adapter_script_pushes_to_a_loopback_hub(tiny, tmp_path):
    out = tmp_path / "adapter"
    with HubServer() as hub:
        env = {
            **os.environ,
            "HF_ENDPOINT": hub.url,
            "HF_HOME": str(tmp_path / "hf_home"),
            "HF_TOKEN": "hf_loopback_test_token",
            "HF_HUB_OFFLINE": "0",
            "TRANSFORMERS_OFFLINE": "0",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "NO_PROXY": "127.0.0.1",
            "no_proxy": "127.0.0.1",
            "OMP_NUM_THREADS": "1",
        }
        command = [sys.executable, str(EXAMPLES / "publish_adapter.py"), "--model", str(tiny), "--count", "4"]
        command += ["--method", "random", "--output", str(out), "--repo-id", "sparc-test/tiny"]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        files = hub.repos["sparc-test/tiny"]
    assert set(files) == {"README.md", "adapter_config.json", "adapter_model.safetensors"}
    assert files["adapter_model.safetensors"] == (out / "adapter_model.safetensors").read_bytes()
    assert done.stdout.count("logits equal to the pruned model's: True") == 3
    assert "PeftModel.from_pretrained(base, 'sparc-test/tiny')" in done.stdout


def test_demo_runs_the_experiment_and_checks_the_reloaded_adapter(examples, tiny, tmp_path):
    out = tmp_path / "demo"
    examples["demo"].main(["--model", str(tiny), "--quick", "--behavior", "repetition", "--count", "4",
                           "--output", str(out)])  # fmt: skip
    report = json.loads((out / "report.json").read_text())
    assert report["reload_identical"] is True and report["pruned"] == 4
    # AurA's rows come from the references' contrast sentences (here: non-repetitive continuations)
    rows = ["base", "lrp", "aura", "aura (top-k)", "random", "random (unprotected)"]
    assert list(report["rows"]) == rows if report["references"]["n_others"] else rows[:2] + rows[4:]
    assert (out / "plot.png").is_file() and (out / "adapter" / "adapter_config.json").is_file()
    units = json.loads((out / "units.json").read_text())["units"]  # what each cut neuron fires on
    assert len(units) == 4 and (out / "layers.png").is_file()
    assert "## What the cut units respond to" in (out / "report.md").read_text()
