"""NaN/Inf relevance is refused where it is made, with the module named, and never reaches a mask."""

from __future__ import annotations

import pytest
import torch
from conftest import TEXTS, make_model

import hf_sparc
from hf_sparc import Relevance, RelevanceInfo

INFO = RelevanceInfo(method="lrp", level="neuron", n_samples=1, n_tokens=1)
NOT_FINITE = r"Relevance of model\.layers\.\d+\.mlp\.up_proj contains \d+ NaN and \d+ Inf"


def _nan_weight(model: torch.nn.Module) -> None:
    with torch.no_grad():
        model.model.layers[1].mlp.up_proj.weight[3, 5] = float("nan")


def _fp16_overflow(model: torch.nn.Module) -> None:
    # activations beyond fp16's 65504 become inf, and inf - inf in the backward pass NaN
    with torch.no_grad():
        for projection in (model.model.layers[0].mlp.up_proj, model.model.layers[0].mlp.gate_proj):
            projection.weight.mul_(3000)


@pytest.mark.parametrize(
    ("damage", "dtype"), [(_nan_weight, torch.float32), (_fp16_overflow, torch.float16)], ids=["nan", "fp16"]
)
def test_non_finite_relevance_is_reported_with_the_module(tokenizer, damage, dtype: torch.dtype) -> None:
    model = make_model("llama", dtype=dtype)
    damage(model)
    with pytest.raises(ValueError, match=NOT_FINITE):
        hf_sparc.attribute(model, TEXTS, tokenizer=tokenizer, progress=False)
    pruner = hf_sparc.SparcPruner(hf_sparc.SparcConfig(count=3))
    with pytest.raises(ValueError, match=NOT_FINITE):
        pruner.fit(model, tokenizer, general=TEXTS)
    assert pruner.masks is None


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_relevance_refuses_non_finite_scores(bad: float) -> None:
    with pytest.raises(ValueError, match=r"Relevance of b contains") as error:
        Relevance({"a": torch.zeros(3), "b": torch.tensor([0.0, bad])}, INFO)
    assert ("1 NaN" in str(error.value)) == (bad != bad)


def test_half_precision_arithmetic_overflow_is_caught() -> None:
    big = Relevance({"m": torch.tensor([60000.0, 1.0], dtype=torch.float16)}, INFO)
    assert torch.equal((big - big)["m"], torch.zeros(2, dtype=torch.float16))
    with pytest.raises(ValueError, match="Relevance of m contains 0 NaN and 1 Inf"):
        big - (-big)  # 120000 does not fit in fp16
    with pytest.raises(ValueError, match="Relevance of m contains"):
        big * 2.0


@pytest.mark.parametrize(
    "scores", [torch.tensor([1, 2]), torch.tensor([True, False]), [1.0, 2.0]], ids=["int", "bool", "list"]
)
def test_relevance_refuses_non_float_scores(scores) -> None:
    with pytest.raises(ValueError, match="Relevance of m must be"):
        Relevance({"m": scores}, INFO)
