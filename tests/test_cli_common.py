"""Helpers of the ``hf-sparc`` commands: loading a SPARC adapter folder once, checked before the
base model is loaded."""

from __future__ import annotations

import shutil

import pytest
import torch
from sparc_fixtures import assert_same_logits, masks_for, tiny_model, tokens

import hf_sparc
from hf_sparc.cli import _common
from hf_sparc.tuner.config import SparcAdapterConfig


def _logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(tokens()).logits


@pytest.fixture
def adapter(tmp_path):
    model = tiny_model("gpt2")
    model.name_or_path = "tiny-gpt2"
    peft_model = hf_sparc.apply_masks(model, masks_for(model, "neuron"))
    hf_sparc.save_adapter(peft_model, tmp_path / "adapter")
    return tmp_path / "adapter", _logits(peft_model)


def test_load_adapter_reads_the_config_once_and_loads_the_named_base(adapter, monkeypatch):
    folder, expected = adapter
    loaded_bases, config_reads = [], []
    read_config = SparcAdapterConfig.from_pretrained.__func__

    def counting_read(cls, *args, **kwargs):
        config_reads.append(args[0])
        return read_config(cls, *args, **kwargs)

    def fake_load_model(name, **loading):
        loaded_bases.append(name)
        return tiny_model("gpt2"), "tokenizer"

    monkeypatch.setattr(SparcAdapterConfig, "from_pretrained", classmethod(counting_read))
    monkeypatch.setattr(_common, "load_model", fake_load_model)
    peft_model, tokenizer, base_name = _common.load_adapter(str(folder))
    assert (base_name, tokenizer, loaded_bases) == ("tiny-gpt2", "tokenizer", ["tiny-gpt2"])
    assert config_reads == [str(folder)]
    assert_same_logits(_logits(peft_model), expected)
    _common.load_adapter(str(folder), model="other-base")
    assert loaded_bases[-1] == "other-base"


def test_load_adapter_refuses_a_damaged_adapter_before_loading_the_base(adapter, tmp_path, monkeypatch):
    folder, _ = adapter
    pickled = tmp_path / "pickled"
    shutil.copytree(folder, pickled)
    (pickled / "adapter_model.safetensors").rename(pickled / "adapter_model.bin")

    def no_base(*args):
        raise AssertionError("the base model was loaded before the adapter was checked")

    monkeypatch.setattr(_common, "load_model", no_base)
    with pytest.raises(FileNotFoundError, match="safetensors only"):
        _common.load_adapter(str(pickled))
    with pytest.raises(FileNotFoundError, match=r"no adapter_config\.json"):
        _common.load_adapter(str(tmp_path))


def test_load_model_loads_like_transformers(tmp_path, monkeypatch):
    from conftest import make_tokenizer

    tiny_model("llama", dtype=torch.bfloat16).save_pretrained(tmp_path)
    make_tokenizer().save_pretrained(tmp_path)
    model, _ = _common.load_model(str(tmp_path))
    assert model.dtype == torch.float32 and not model.training  # the CLI default: fp32
    model, _ = _common.load_model(str(tmp_path), dtype="auto")
    assert model.dtype == torch.bfloat16  # the checkpoint's
    from transformers import AutoModelForCausalLM

    calls = []
    load = AutoModelForCausalLM.from_pretrained
    monkeypatch.setattr(
        AutoModelForCausalLM, "from_pretrained", lambda *a, **kw: calls.append(kw) or load(*a, **kw)
    )
    model, _ = _common.load_model(str(tmp_path), device_map="cpu", revision="main")
    assert calls[-1]["device_map"] == "cpu" and calls[-1]["revision"] == "main" and model.device.type == "cpu"
    parser = hf_sparc.cli.build_parser()
    args = parser.parse_args(["attribute", "--model", "m", "--dtype", "auto", "--device-map", "auto",
                              "--revision", "v1", "--trust-remote-code", "--output", "o"])  # fmt: skip
    assert _common.loading_options(args) == {
        "device": "cpu", "dtype": "auto", "device_map": "auto", "revision": "v1", "trust_remote_code": True
    }  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["correct", "--undesired", "missing.txt", "--general", "general:dev"], "missing.txt"),
        (["correct", "--undesired", "u.txt", "--general", "u.txt", "--eval", "no.jsonl"], "no.jsonl"),
        (["correct", "--undesired", "u.txt", "--general", "u.txt", "--fraction", "2"], "fraction"),
        (["attribute", "--texts", "missing.txt"], "missing.txt"),
        (["evaluate", "--texts", "missing.txt"], "missing.txt"),
    ],
)
def test_data_and_options_are_checked_before_the_model_loads(argv, message, tmp_path, monkeypatch, capsys):
    from hf_sparc.cli import attribute, correct, evaluate, main

    (tmp_path / "u.txt").write_text("one text\nanother text\n")
    monkeypatch.chdir(tmp_path)

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the arguments were checked")

    for module in (_common, correct, attribute):
        monkeypatch.setattr(module, "load_model", no_model)
    monkeypatch.setattr(evaluate, "load_with_adapter", no_model)
    assert main([*argv, "--model", "m", "--output", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err


def test_a_missing_local_model_folder_fails_before_transformers_is_asked(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        _common.load_model(str(tmp_path / "absent"))
