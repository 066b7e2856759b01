"""Push a SPARC adapter to a loopback Hub over HTTP and load it back with every loader.

huggingface_hub reads ``HF_ENDPOINT`` when it is imported, so the round trip runs in a fresh
subprocess that starts the server (tests/hub_server.py) first and imports the libraries after.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path
from typing import ClassVar

import pytest
from sparc_fixtures import masks_for, relevance, tiny_model

import hf_sparc
from hf_sparc.cli import main

TESTS = Path(__file__).parent

SCRIPT = textwrap.dedent(
    """
    import os, re, sys
    from hub_server import HubServer

    with HubServer() as hub:
        os.environ["HF_ENDPOINT"] = hub.url
        import torch
        from huggingface_hub import hf_hub_download
        from peft import PeftModel
        from sparc_fixtures import assert_same_logits, masks_for, tiny_model, tokens
        from transformers import AutoModelForCausalLM

        import hf_sparc
        from hf_sparc.tuner import SparcLayer

        base_dir = os.path.join(sys.argv[1], "base")
        tiny_model("gpt2").save_pretrained(base_dir)

        def load_base():
            return AutoModelForCausalLM.from_pretrained(base_dir).eval()

        def logits(model):
            with torch.no_grad():
                return model(tokens()).logits

        model = load_base()
        peft_model = hf_sparc.apply_masks(model, masks_for(model, "neuron"), adapter_name="detox")
        expected = logits(peft_model)
        url = hf_sparc.push_to_hub(
            peft_model, "sparc-test/gpt2-detox", metrics={"toxicity": 0.125}, reference_data="toy texts"
        )
        assert url.startswith(hub.url + "/sparc-test/gpt2-detox/commit/"), url
        files = hub.repos["sparc-test/gpt2-detox"]
        assert set(files) == {"README.md", "adapter_config.json", "adapter_model.safetensors"}, set(files)
        card = files["README.md"].decode()
        for needed in ("library_name: peft", f"for {base_dir}", "- hf_sparc", "10 neurons",
                       "toxicity", "toy texts", "pip install hf-sparc", "import hf_sparc",
                       'from_pretrained("sparc-test/gpt2-detox")'):
            assert needed in card, needed

        loaded = PeftModel.from_pretrained(load_base(), "sparc-test/gpt2-detox")
        assert_same_logits(logits(loaded), expected)

        auto = AutoModelForCausalLM.from_pretrained("sparc-test/gpt2-detox").eval()
        assert any(isinstance(m, SparcLayer) for m in auto.modules())
        assert_same_logits(logits(auto), expected)

        plain = load_base()
        plain.load_adapter("sparc-test/gpt2-detox")
        assert_same_logits(logits(plain), expected)

        # what came over HTTP is what was pushed
        local = hf_hub_download("sparc-test/gpt2-detox", "adapter_model.safetensors")
        assert open(local, "rb").read() == files["adapter_model.safetensors"]
        assert any(re.match(r"(HEAD|GET) /sparc-test/gpt2-detox/resolve/", r) for r in hub.requests)
    print("HUB ROUND TRIP OK")
    """
)


def test_push_to_hub_and_load_back_over_http(tmp_path):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS.parent), os.environ.get("PYTHONPATH", "")]),
        "HF_HOME": str(tmp_path / "hf_home"),
        "HF_HUB_OFFLINE": "0",
        "TRANSFORMERS_OFFLINE": "0",
        "HF_TOKEN": "hf_loopback_test_token",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "NO_PROXY": "127.0.0.1",
        "no_proxy": "127.0.0.1",
    }
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    assert "HUB ROUND TRIP OK" in result.stdout


class _RecordingApi:
    """Stands in for ``huggingface_hub.HfApi`` inside :mod:`hf_sparc.tuner.hub`; records every call."""

    calls: ClassVar[list[tuple]] = []

    def __init__(self, token=None):
        self.token = token

    def create_repo(self, repo_id, private=None, exist_ok=False):
        self.calls.append(("create_repo", repo_id, self.token, private, exist_ok))

    def upload_folder(self, repo_id, folder_path, revision=None, commit_message=None, create_pr=False):
        files = sorted(p.name for p in Path(folder_path).iterdir())  # the folder may be temporary
        self.calls.append(("upload_folder", repo_id, revision, commit_message, files))
        if create_pr:
            self.calls.append(("create_pr", repo_id))
        return types.SimpleNamespace(
            commit_url=f"https://hub.test/{repo_id}/commit/1",
            pr_url=f"https://hub.test/{repo_id}/discussions/1" if create_pr else None,
        )


@pytest.fixture
def recording_hub(monkeypatch):
    _RecordingApi.calls = []
    monkeypatch.setattr("hf_sparc.tuner.hub.HfApi", _RecordingApi)
    return _RecordingApi.calls


def test_every_entry_point_uploads_through_the_one_uploader(recording_hub, tmp_path, capsys):
    """push_to_hub, SparcPruner.push_to_hub and ``hf-sparc push`` all reach the Hub through
    hf_sparc.tuner.hub.upload_folder (a second uploader would bypass the recording API and fail
    offline, or record nothing)."""
    model = tiny_model("llama")
    masks = masks_for(model, "neuron")
    peft_model = hf_sparc.apply_masks(model, masks)
    url = hf_sparc.push_to_hub(peft_model, "me/adapter", token="t1", private=True, revision="dev")
    assert url == "https://hub.test/me/adapter/commit/1"

    pruner = hf_sparc.SparcPruner(hf_sparc.SparcConfig(count=10))
    pruner.relevance, pruner.masks = {"general": relevance(model, "neuron")}, masks
    assert pruner.push_to_hub("me/pruner", token="t2") == "https://hub.test/me/pruner/commit/1"
    pr = pruner.push_to_hub("me/pruner", revision="main", create_pr=True)
    assert pr == "https://hub.test/me/pruner/discussions/1"

    hf_sparc.save_adapter(peft_model, tmp_path / "run")
    argv = ["push", str(tmp_path / "run"), "me/run", "--token", "t3", "--private", "--message", "hello"]
    assert main(argv) == 0
    assert capsys.readouterr().out.strip() == "https://hub.test/me/run/commit/1"

    adapter = ["README.md", "adapter_config.json", "adapter_model.safetensors"]
    assert recording_hub == [
        ("create_repo", "me/adapter", "t1", True, True),
        ("upload_folder", "me/adapter", "dev", "Upload SPARC pruning adapter", adapter),
        ("create_repo", "me/pruner", "t2", None, True),
        (
            "upload_folder",
            "me/pruner",
            None,
            "Upload SparcPruner",
            ["README.md", "masks.safetensors", "relevance_general.safetensors", "sparc_config.json"],
        ),
        ("create_repo", "me/pruner", None, None, True),
        (
            "upload_folder",
            "me/pruner",
            "main",
            "Upload SparcPruner",
            ["README.md", "masks.safetensors", "relevance_general.safetensors", "sparc_config.json"],
        ),
        ("create_pr", "me/pruner"),
        ("create_repo", "me/run", "t3", True, True),
        ("upload_folder", "me/run", None, "hello", adapter),
    ]


def test_pruner_from_the_hub_passes_revision_token_and_cache_dir(tmp_path, monkeypatch):
    import huggingface_hub

    model = tiny_model("llama")
    pruner = hf_sparc.SparcPruner(hf_sparc.SparcConfig(count=10))
    pruner.relevance, pruner.masks = {"general": relevance(model, "neuron")}, masks_for(model, "neuron")
    pruner.save_pretrained(tmp_path / "snapshot")
    seen = {}

    def snapshot_download(repo_id, **kwargs):
        seen.update(repo_id=repo_id, **kwargs)
        return str(tmp_path / "snapshot")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    loaded = hf_sparc.SparcPruner.from_pretrained("me/pruner", revision="v1", token="t", cache_dir="c")
    assert seen == {"repo_id": "me/pruner", "revision": "v1", "token": "t", "cache_dir": "c"}
    assert loaded.masks.total() == 10
