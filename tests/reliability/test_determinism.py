"""Same inputs, same masks: across runs, batch sizes (with padding) and RNG states; ties broken by
module order, then index."""

from __future__ import annotations

import pytest
import torch
from conftest import TEXTS, make_model

import hf_sparc
from hf_sparc import Relevance, RelevanceInfo

# texts of different lengths, so batches of 4 and 8 are padded
assert len({len(t.split()) for t in TEXTS}) > 1


def _masks(tokenizer, level: str, batch_size: int, seed: int = 0) -> dict[str, list[int]]:
    model = make_model("llama")
    torch.manual_seed(seed)  # a different global RNG state must not matter
    undesired = hf_sparc.attribute(
        model, TEXTS[:4], tokenizer=tokenizer, level=level, batch_size=batch_size, progress=False
    )
    general = hf_sparc.attribute(
        model, TEXTS[4:], tokenizer=tokenizer, level=level, batch_size=batch_size, progress=False
    )
    masks = hf_sparc.select_contrastive(undesired=undesired, general=general, count=6)
    return {name: idx.tolist() for name, idx in masks.items()}


@pytest.mark.parametrize("level", ["neuron", "head", "weight"])
def test_masks_are_bit_identical_across_runs_and_batch_sizes(tokenizer, level: str) -> None:
    reference = _masks(tokenizer, level, batch_size=1)
    assert sum(map(len, reference.values())) == 6
    for batch_size, seed in ((1, 1), (4, 2), (8, 3)):
        assert _masks(tokenizer, level, batch_size, seed) == reference, f"batch_size={batch_size}"


def test_random_method_depends_only_on_its_seed() -> None:
    model = make_model("llama")
    runs = []
    for global_seed in (0, 1):
        torch.manual_seed(global_seed)
        runs.append(hf_sparc.attribute(model, method="random", seed=7, progress=False))
    assert all(torch.equal(runs[0][n], runs[1][n]) for n in runs[0])
    other = hf_sparc.attribute(model, method="random", seed=8, progress=False)
    assert not all(torch.equal(runs[0][n], other[n]) for n in other)


def _flat(scores: dict[str, list[float]], level: str = "neuron") -> Relevance:
    tensors = {name: torch.tensor(values) for name, values in scores.items()}
    return Relevance(tensors, RelevanceInfo(method="lrp", level=level, n_samples=1, n_tokens=1))


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        # all tied: the first module is filled first, lowest indices first
        ("global", {"m0": [0, 1, 2, 3], "m1": [0]}),
        # 5 over sizes 4 and 4: 2.5 each, the remainder goes to the earlier module
        ("layer", {"m0": [0, 1, 2], "m1": [0, 1]}),
    ],
)
def test_ties_are_broken_by_module_order_then_index(scope: str, expected: dict[str, list[int]]) -> None:
    tied = _flat({"m0": [1.0] * 4, "m1": [1.0] * 4})
    for keep in ("highest", "lowest"):
        masks = hf_sparc.select(tied, count=5, keep=keep, scope=scope)
        assert {n: t.tolist() for n, t in masks.items()} == expected, keep
    contrastive = hf_sparc.select_contrastive(undesired=tied, general=tied, count=5, scope=scope)
    assert {n: t.tolist() for n, t in contrastive.items()} == expected


def test_ties_at_the_cut_take_the_lower_index_in_every_scope() -> None:
    rel = _flat({"m0": [0.0, 2.0, 1.0, 1.0, 1.0], "m1": [1.0, 1.0, 0.0]})
    masks = hf_sparc.select(rel, count=4)
    # 0.0 (m0[0]), 0.0 (m1[2]), then the first two of the five tied 1.0s in (module, index) order
    assert {n: t.tolist() for n, t in masks.items()} == {"m0": [0, 2, 3], "m1": [2]}
    weight = _flat({"w": [[1.0, 1.0, 1.0], [0.0, 1.0, 1.0]]}, level="weight")
    rows = hf_sparc.select(
        weight, count=2, scope="row", model=torch.nn.ModuleDict({"w": torch.nn.Linear(3, 2)})
    )
    assert rows["w"].tolist() == [0, 3]
