"""Selection rules (paper Eq. 2, 3, 7) and the Masks container."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoModelForCausalLM, GPT2Config

import hf_sparc
from hf_sparc import Masks, Relevance, RelevanceInfo


def rel(scores: dict[str, list], level: str = "neuron") -> Relevance:
    tensors = {name: torch.tensor(values, dtype=torch.float32) for name, values in scores.items()}
    return Relevance(tensors, RelevanceInfo(method="lrp", level=level, n_samples=4, n_tokens=40))


def as_lists(masks: Masks) -> dict[str, list[int]]:
    return {name: idx.tolist() for name, idx in masks.items()}


def test_select_prunes_lowest_and_breaks_ties_by_module_then_index():
    r = rel({"a": [3, 1, 1, 0, 5], "b": [1, 0, 2]})
    masks = hf_sparc.select(r, count=3)
    # 0 (a3), 0 (b1), then the first of the tied 1s in (module, index) order: a1
    assert as_lists(masks) == {"a": [1, 3], "b": [1]}
    assert masks.total() == 3 and masks.size() == 8 and len(masks) == 2
    assert masks.level == "neuron" and masks.method == "lrp" and "count=3" in masks.rule


def test_keep_lowest_prunes_highest():
    masks = hf_sparc.select(rel({"a": [3, 1, 1, 0, 5], "b": [1, 0, 2]}), count=3, keep="lowest")
    assert as_lists(masks) == {"a": [0, 4], "b": [2]}


def test_fraction_counts_components():
    masks = hf_sparc.select(rel({"a": [3, 1, 1, 0, 5], "b": [1, 0, 2]}), fraction=0.5)
    assert masks.total() == 4
    assert as_lists(masks) == {"a": [1, 2, 3], "b": [1]}


def test_contrastive_prunes_most_negative_difference():
    undesired = rel({"a": [5, 0, 1, 0], "b": [0, 9]})
    general = rel({"a": [1, 1, 1, 1], "b": [1, 1]})
    masks = hf_sparc.select_contrastive(undesired=undesired, general=general, count=2)
    # general - undesired = a: [-4, 1, 0, 1], b: [1, -8]
    assert as_lists(masks) == {"a": [0], "b": [1]}
    assert "select_contrastive" in masks.rule and masks.n_samples == 8


def test_layer_scope_same_share_per_module():
    r = rel({"a": list(range(10, 0, -1)), "b": list(range(20))})
    masks = hf_sparc.select(r, count=6, scope="layer")
    # sizes 10 and 20 -> 2 and 4, the lowest of each module
    assert as_lists(masks) == {"a": [8, 9], "b": [0, 1, 2, 3]}


def test_layer_scope_remainder_goes_to_earlier_module_on_ties():
    masks = hf_sparc.select(rel({"a": [0, 1, 2], "b": [0, 1, 2]}), count=3, scope="layer")
    assert as_lists(masks) == {"a": [0, 1], "b": [0]}


def test_row_scope_linear_prunes_per_output_row():
    weight = torch.tensor([[4.0, 3, 2, 1], [1, 2, 3, 4], [0, 9, 9, 0]])
    r = Relevance({"w": weight}, RelevanceInfo("lrp", "weight", 1, 1))
    model = torch.nn.Module()
    model.w = torch.nn.Linear(4, 3)
    masks = hf_sparc.select(r, count=3, scope="row", model=model)
    # one weight per row: row0 col3, row1 col0, row2 col0 (tie with col3 -> lower index)
    assert as_lists(masks) == {"w": [3, 4, 8]}


def test_row_scope_conv1d_prunes_per_output_column():
    gpt2 = AutoModelForCausalLM.from_config(
        GPT2Config(n_embd=8, n_layer=1, n_head=2, vocab_size=20, n_positions=16)
    )
    name = "transformer.h.0.mlp.c_fc"
    weight = gpt2.get_submodule(name).weight  # Conv1D: [in=8, out=32]
    scores = torch.arange(weight.numel(), dtype=torch.float32).view_as(weight)
    r = Relevance({name: scores}, RelevanceInfo("lrp", "weight", 1, 1))
    masks = hf_sparc.select(r, count=32, scope="row", model=gpt2)
    # every output feature (column) loses its lowest weight, which is in input row 0
    assert as_lists(masks) == {name: list(range(32))}


def test_row_scope_needs_weight_level_and_model():
    with pytest.raises(ValueError, match="weight-level"):
        hf_sparc.select(rel({"a": [1, 2]}), count=1, scope="row", model=torch.nn.Linear(1, 1))
    r = Relevance({"w": torch.ones(2, 2)}, RelevanceInfo("lrp", "weight", 1, 1))
    with pytest.raises(ValueError, match="model="):
        hf_sparc.select(r, count=1, scope="row")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one"),
        ({"count": 1, "fraction": 0.1}, "exactly one"),
        ({"count": 0}, "at least 1"),
        ({"count": -2}, "at least 1"),
        ({"count": 9}, "exceeds the 8"),
        ({"count": 1.5}, "must be an int"),
        ({"fraction": 0.0}, r"\(0, 1\)"),
        ({"fraction": 1.0}, r"\(0, 1\)"),
        ({"fraction": -0.1}, r"\(0, 1\)"),
        ({"fraction": 0.01}, "selects nothing"),
        ({"count": 1, "keep": "middle"}, "keep must be"),
        ({"count": 1, "scope": "block"}, "scope must be"),
    ],
)
def test_invalid_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        hf_sparc.select(rel({"a": [3, 1, 1, 0, 5], "b": [1, 0, 2]}), **kwargs)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_scores_name_the_module(bad):
    with pytest.raises(ValueError, match=r"model\.layers\.1\.mlp"):
        hf_sparc.select(rel({"model.layers.0.mlp": [1, 2], "model.layers.1.mlp": [0, bad]}), count=1)


def test_finiteness_check_is_exact_when_the_fast_sum_overflows():
    from hf_sparc.relevance import all_finite

    big = torch.full((4,), 3e38)  # finite values whose fp32 sum overflows to Inf
    assert all_finite(big) and all_finite(torch.zeros(0))
    assert not all_finite(torch.tensor([1.0, float("nan")]))
    assert not all_finite(torch.tensor([float("inf"), 1.0]))
    r = Relevance({"m": big.clone()}, RelevanceInfo("lrp", "neuron", 1, 1))  # accepted, not refused
    assert hf_sparc.select(r, count=1)["m"].tolist() == [0]


def test_token_level_relevance_is_refused():
    r = Relevance({"emb": torch.ones(3)}, RelevanceInfo("lrp", "token", 1, 3, token_counts=[3]))
    with pytest.raises(ValueError, match="token-level"):
        hf_sparc.select(r, count=1)


@settings(max_examples=60, deadline=None)
@given(
    scores=st.lists(st.lists(st.integers(-3, 3), min_size=1, max_size=12), min_size=1, max_size=4),
    data=st.data(),
)
def test_global_selection_matches_reference_sort(scores, data):
    """Property: global selection == the first k of a sort by (score, module order, index)."""
    r = rel({f"m{i}": s for i, s in enumerate(scores)})
    k = data.draw(st.integers(1, sum(map(len, scores))))
    keep = data.draw(st.sampled_from(["highest", "lowest"]))
    sign = 1 if keep == "highest" else -1
    ranked = sorted((sign * v, m, i) for m, s in enumerate(scores) for i, v in enumerate(s))[:k]
    expected: dict[str, list[int]] = {}
    for _, m, i in sorted(ranked, key=lambda t: (t[1], t[2])):
        expected.setdefault(f"m{m}", []).append(i)
    assert as_lists(hf_sparc.select(r, count=k, keep=keep)) == expected


def test_masks_validate_indices():
    shapes = {"a": (5,)}
    with pytest.raises(ValueError, match="out of range"):
        Masks("neuron", {"a": torch.tensor([1, 5])}, shapes)
    with pytest.raises(ValueError, match="unsorted"):
        Masks("neuron", {"a": torch.tensor([3, 1])}, shapes)
    with pytest.raises(ValueError, match="duplicated"):
        Masks("neuron", {"a": torch.tensor([1, 1])}, shapes)
    with pytest.raises(ValueError, match="integers"):
        Masks("neuron", {"a": torch.tensor([1.0])}, shapes)
    with pytest.raises(ValueError, match="no entry in `shapes`"):
        Masks("neuron", {"b": torch.tensor([1])}, shapes)
    with pytest.raises(ValueError, match="Unknown mask level"):
        Masks("token", {}, shapes)


def test_summary_counts_and_fractions():
    masks = Masks(
        "neuron",
        {"a": torch.tensor([0, 2]), "c": torch.tensor([1])},
        {"a": (4,), "b": (6,), "c": (10,)},
    )
    summary = masks.summary()
    assert [(r.module, r.pruned, r.total) for r in summary.rows] == [("a", 2, 4), ("b", 0, 6), ("c", 1, 10)]
    assert [r.fraction for r in summary.rows] == [0.5, 0.0, 0.1]
    assert (summary.pruned, summary.total, summary.fraction) == (3, 20, 0.15)
    text = str(summary)
    assert "50.000%" in text and "15.000%" in text and text.splitlines()[-1].startswith("total")
    markdown = summary.to_markdown()
    assert markdown.splitlines()[0].startswith("| module | pruned neurons |")
    assert "| `c` | 1 | 10 | 10.000% |" in markdown
    assert markdown.splitlines()[-1] == "| **total** | 3 | 20 | 15.000% |"


def test_union_merges_indices_and_checks_compatibility():
    a = Masks("neuron", {"x": torch.tensor([0, 2])}, {"x": (4,), "y": (3,)}, rule="r1")
    b = Masks(
        "neuron", {"x": torch.tensor([2, 3]), "y": torch.tensor([1])}, {"x": (4,), "y": (3,)}, rule="r2"
    )
    both = a.union(b)
    assert as_lists(both) == {"x": [0, 2, 3], "y": [1]}
    assert both.total() == 4 and "r1" in both.rule and "r2" in both.rule
    with pytest.raises(ValueError, match="Shape mismatch"):
        a.union(Masks("neuron", {}, {"x": (5,)}))
    with pytest.raises(ValueError, match="weight-level"):
        a.union(Masks("weight", {}, {"x": (4, 1)}))


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(1, 30), min_size=1, max_size=5), data=st.data())
def test_layer_scope_gives_every_module_its_share(sizes, data):
    """Property: exactly count pruned; each module within one of count * size / total; lowest first."""
    r = rel({f"m{i}": [float(v) for v in data.draw(st.permutations(range(n)))] for i, n in enumerate(sizes)})
    count = data.draw(st.integers(1, sum(sizes)))
    masks = hf_sparc.select(r, count=count, scope="layer")
    assert masks.total() == count
    for name, n in zip(r, sizes, strict=True):
        pruned = masks[name].tolist() if name in masks else []
        assert abs(len(pruned) - count * n / sum(sizes)) < 1
        # scores are a permutation of 0..n-1, so the pruned ones are exactly the values below the quota
        assert sorted(r[name][pruned].tolist()) == list(range(len(pruned)))


def test_protect_general_never_cuts_units_general_text_relies_on():
    from hf_sparc import Relevance, RelevanceInfo, select_contrastive

    def rel(values):
        info = RelevanceInfo(method="lrp", level="neuron", n_samples=1, n_tokens=1)
        return Relevance({"m": torch.tensor(values)}, info)

    # Unit 0 is the most toxicity-specific by Eq. 7 (diff -5) but carries the largest general
    # relevance; unit 2 is the next most specific with little general relevance.
    undesired = rel([15.0, 0.0, 3.0, 0.5])
    general = rel([10.0, 1.0, 0.5, 0.8])
    assert select_contrastive(undesired=undesired, general=general, count=1)["m"].tolist() == [0]
    protected = select_contrastive(undesired=undesired, general=general, count=1, protect_general=0.5)
    assert protected["m"].tolist() == [2]
    assert "protect_general=0.5" in protected.rule
    with pytest.raises(ValueError, match="Only 2 components are unprotected candidates"):
        select_contrastive(undesired=undesired, general=general, count=3, protect_general=0.5)
    with pytest.raises(ValueError, match=r"protect_general must be in \[0, 1\)"):
        select_contrastive(undesired=undesired, general=general, count=1, protect_general=1.0)
