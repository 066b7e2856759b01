"""`Relevance`: mapping behaviour, arithmetic checks and safetensors round trips."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import TEXTS, make_model
from safetensors.torch import save_file

import hf_sparc
from hf_sparc import Relevance, RelevanceInfo


def _relevance(level="neuron", method="lrp", **scores):
    scores = scores or {"a": torch.tensor([1.0, -2.0, 3.0]), "b": torch.tensor([0.5, 0.0])}
    return Relevance(scores, RelevanceInfo(method=method, level=level, n_samples=2, n_tokens=10))


def test_arithmetic_is_elementwise_and_checked():
    a, b = _relevance(), _relevance(method="gradient")
    diff = a - b
    assert torch.equal(diff["a"], torch.zeros(3)) and diff.method == "(lrp) - (gradient)"
    assert torch.equal((a + b)["a"], torch.tensor([2.0, -4.0, 6.0]))
    assert torch.equal((2 * a)["b"], torch.tensor([1.0, 0.0]))
    assert torch.equal((a / 2)["a"], torch.tensor([0.5, -1.0, 1.5]))
    assert torch.equal(abs(-a)["a"], torch.tensor([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="neuron-level with weight-level"):
        a - _relevance(level="weight")
    with pytest.raises(ValueError, match="different modules"):
        a - _relevance(a=torch.zeros(3))
    with pytest.raises(ValueError, match="Shape mismatch for a"):
        a - _relevance(a=torch.zeros(4), b=torch.zeros(2))
    with pytest.raises(TypeError):
        a - {"a": torch.zeros(3)}


def test_save_load_round_trip(tmp_path, tokenizer):
    model = make_model("llama")
    for level in ("neuron", "token"):
        rel = hf_sparc.attribute(model, TEXTS, tokenizer=tokenizer, level=level)
        rel.save(tmp_path / f"{level}.safetensors")
        loaded = Relevance.load(tmp_path / f"{level}.safetensors")
        assert loaded.info == rel.info
        assert set(loaded) == set(rel) and all(torch.equal(loaded[n], rel[n]) for n in rel)
    assert [t.tolist() for t in loaded.per_text()] == [t.tolist() for t in rel.per_text()]
    assert not list(tmp_path.glob("*.tmp-*"))


def test_load_rejects_foreign_and_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        Relevance.load(tmp_path / "missing.safetensors")
    save_file({"a": torch.zeros(2)}, tmp_path / "plain.safetensors")
    with pytest.raises(ValueError, match="no hf_sparc relevance metadata"):
        Relevance.load(tmp_path / "plain.safetensors")
    good = tmp_path / "good.safetensors"
    _relevance().save(good)
    (tmp_path / "cut.safetensors").write_bytes(good.read_bytes()[:-7])
    with pytest.raises(ValueError, match="not a readable safetensors"):
        Relevance.load(tmp_path / "cut.safetensors")
    (tmp_path / "empty.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="not a readable safetensors"):
        Relevance.load(tmp_path / "empty.safetensors")


def test_metadata_and_mapping():
    rel = _relevance()
    assert len(rel) == 2 and rel.numel() == 5 and list(rel) == ["a", "b"]
    assert "components=5" in repr(rel)
    with pytest.raises(ValueError, match="token-level"):
        rel.per_text()
    with pytest.raises(ValueError, match="Unknown level"):
        _relevance(level="layer")
    assert json.loads(json.dumps(rel.info.settings)) == {}
