"""Attribution under a memory budget (hf_sparc.attribution.memory): the plan, and that a budgeted
run gives the unbudgeted run's relevance."""

from __future__ import annotations

import copy
import logging
import weakref
from pathlib import Path

import pytest
import torch
from conftest import TEXTS, make_model, make_tokenizer

import hf_sparc
from hf_sparc.architectures import get_architecture
from hf_sparc.attribution import engine
from hf_sparc.attribution.memory import parse_bytes, plan_memory, process_bytes
from hf_sparc.attribution.targets import resolve_targets


@pytest.fixture
def tensor_budgets(monkeypatch):
    """Budgets derived here from tensor sizes: the process's other memory (interpreter, libraries)
    is left out of the run's plan too, so that the plan computed here is the run's."""
    monkeypatch.setattr(engine, "process_bytes", lambda *_: 0)


@pytest.fixture
def accelerator_budget(monkeypatch, tensor_budgets):
    """Plans as for an accelerator, whose budget finished scores leave (they are made in CPU
    memory): layer-group passes are planned then, and their result is checked here on CPU."""

    def accelerator_plan(*args, **kwargs):
        return plan_memory(*args, **{**kwargs, "scores_in_budget": False})

    monkeypatch.setattr(engine, "plan_memory", accelerator_plan)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("8GB", 8 * 10**9), ("7.5GiB", int(7.5 * 2**30)), ("512 mb", 512 * 10**6), (4096, 4096), ("100", 100)],
)
def test_sizes_parse(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("bad", ["8 apples", "-1GB", 0, "GB", True])
def test_bad_sizes_are_refused(bad):
    with pytest.raises(ValueError, match="max_memory"):
        parse_bytes(bad)


def _weight_targets(model):
    return resolve_targets(model, get_architecture(model), "weight", None)


def test_plan_tightens_step_by_step_and_refuses_what_cannot_fit():
    model = make_model("llama")
    targets = _weight_targets(model)
    unbounded = plan_memory(model, targets, "weight", tokens=64, layers=2, budget=None)
    assert unbounded.accumulator == torch.float64 and len(unbounded.groups) == 1
    plans = [plan_memory(model, targets, "weight", 64, 2, int(unbounded.estimate * f)) for f in (1.0, 0.75)]
    assert plans[0].accumulator == torch.float64
    assert plans[1].accumulator == torch.float32  # float32 halves the accumulators
    # shrink until the targets must be split over passes, then until nothing fits
    budget, seen_groups = unbounded.estimate, 1
    while True:
        budget = int(budget * 0.9)
        try:
            plan = plan_memory(model, targets, "weight", 64, 2, budget)
        except MemoryError as error:
            assert "cannot be met" in str(error) and "GB" in str(error)
            break
        assert plan.estimate <= budget
        assert sorted(n for g in plan.groups for n in g) == sorted(targets)  # every target, once
        seen_groups = max(seen_groups, len(plan.groups))
    assert seen_groups > 1


@pytest.mark.parametrize("method", ["lrp", "lrp-l2"])
def test_budgeted_run_equals_the_unbudgeted_one_and_says_what_it_chose(caplog, accelerator_budget, method):
    model, tokenizer = make_model("llama"), make_tokenizer()
    free = hf_sparc.attribute(
        model, TEXTS, tokenizer=tokenizer, method=method, level="weight", batch_size=3, progress=False
    )
    targets = _weight_targets(model)
    longest = max(len(tokenizer(t)["input_ids"]) for t in TEXTS)
    budget = plan_memory(model, targets, "weight", 3 * longest, 2, None).estimate
    while len(plan_memory(model, targets, "weight", 3 * longest, 2, budget).groups) < 2:
        budget = int(budget * 0.95)
    with caplog.at_level(logging.INFO, logger="hf_sparc"):
        bounded = hf_sparc.attribute(model, TEXTS, tokenizer=tokenizer, method=method, level="weight",
                                     batch_size=3, progress=False, max_memory=budget)  # fmt: skip
    assert (
        "float32 accumulators, gradient checkpointing" in caplog.text
        and "passes over the data" in caplog.text
    )
    assert list(bounded) == list(free) and bounded.info.settings["accumulator"] == "float32"
    for name in free:
        # float32 sums of a few fp32 batch contributions: equal up to fp32 rounding
        torch.testing.assert_close(
            bounded[name], free[name], rtol=1e-5, atol=1e-6 * float(free[name].abs().max())
        )
    for count in (1, 10, 100):
        top_free = hf_sparc.select(free, count=count)
        top_bounded = hf_sparc.select(bounded, count=count)
        assert all(torch.equal(top_free[n], top_bounded[n]) for n in top_free)


def test_on_cpu_passes_keep_finished_scores_on_disk_and_the_relevance_itself_counts(
    monkeypatch, tensor_budgets
):
    model, tokenizer = make_model("llama"), make_tokenizer()
    targets = _weight_targets(model)
    tokens = 3 * max(len(tokenizer(t)["input_ids"]) for t in TEXTS)

    def cpu_plan(budget):
        return plan_memory(model, targets, "weight", tokens, 2, budget, scores_in_budget=True)

    one_pass = cpu_plan(plan_memory(model, targets, "weight", tokens, 2, None).estimate)
    assert len(one_pass.groups) == 1 and not one_pass.spill
    # one pass: the same plan as an accelerator's
    assert one_pass == plan_memory(model, targets, "weight", tokens, 2, one_pass.estimate)
    # below the one-pass peak on CPU: passes, each finished group's scores on disk until the end
    plan = cpu_plan(plan_memory(model, targets, "weight", tokens, 2, 10**12).estimate - 1)
    budget = plan.estimate
    while len(plan.groups) < 2:
        budget = int(budget * 0.97)
        plan = cpu_plan(budget)
    assert plan.spill and plan.estimate <= budget
    # at one token per batch a pass needs less than the end of the run (model and relevance): the
    # end is what must fit then, exactly
    model_bytes = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    end = model_bytes + sum(m.weight.numel() for m in targets.values()) * 4
    at_the_end = plan_memory(model, targets, "weight", 1, 2, end, scores_in_budget=True)
    assert at_the_end.spill and at_the_end.estimate == end
    with pytest.raises(MemoryError, match="cannot be met"):
        plan_memory(model, targets, "weight", 1, 2, end - 1, scores_in_budget=True)

    spilled = []

    def save_scores(tensors, path):
        spilled.append((path, sorted(tensors)))
        engine_save_scores(tensors, path)

    engine_save_scores = engine._save_scores
    monkeypatch.setattr(engine, "_save_scores", save_scores)
    free = hf_sparc.attribute(model, TEXTS, tokenizer=tokenizer, level="weight", batch_size=3, progress=False)
    bounded = hf_sparc.attribute(model, TEXTS, tokenizer=tokenizer, level="weight", batch_size=3,
                                 progress=False, max_memory=budget)  # fmt: skip
    assert [names for _, names in spilled] == [sorted(group) for group in plan.groups]
    assert not any(Path(path).parent.exists() for path, _ in spilled)  # the folder is removed
    assert list(bounded) == list(free)
    for name in free:
        torch.testing.assert_close(
            bounded[name], free[name], rtol=1e-5, atol=1e-6 * float(free[name].abs().max())
        )


def test_budget_from_the_pruner_config_and_cli_is_checked_early():
    with pytest.raises(ValueError, match="max_memory"):
        hf_sparc.SparcConfig(count=1, max_memory="lots")
    from hf_sparc.cli import build_parser
    from hf_sparc.cli._common import scaling_options

    args = build_parser().parse_args(["attribute", "--model", "m", "--output", "o", "--max-memory", "2GB"])
    assert scaling_options(args)["max_memory"] == "2GB"


def test_float32_accumulators_hold_copies_in_float32():
    from hf_sparc.attribution.collector import Collector

    model = make_model("llama")
    collector = Collector(model, get_architecture(model), "neuron", None, {}, False, dtype=torch.float32)
    shared = torch.ones(3)
    collector.add("a", shared)
    collector.add("b", shared)  # the same tensor for two targets (Wanda's shared inputs)
    collector.add("a", shared)
    assert collector.sums["a"].dtype == torch.float32 and collector.sums["a"].tolist() == [2.0] * 3
    assert collector.sums["b"].tolist() == [1.0] * 3 and shared.tolist() == [1.0] * 3


def test_weight_sums_grow_in_place_and_are_released_when_scored():
    from hf_sparc.attribution.collector import Collector
    from hf_sparc.attribution.signals import RelevanceSignal

    model, module = make_model("llama"), torch.nn.Linear(4, 3, bias=False)
    generator = torch.Generator().manual_seed(0)
    factors = [(torch.randn(3, 5, generator=generator), torch.randn(5, 4, generator=generator))
               for _ in range(3)]  # fmt: skip
    for dtype in (torch.float32, torch.float64):
        collector = Collector(model, get_architecture(model), "weight", RelevanceSignal(), {"m": module},
                              False, dtype=dtype)  # fmt: skip
        collector.add_matmul("m", *factors[0])
        storage = collector.sums["m"].data_ptr()
        for left, right in factors[1:]:
            collector.add_matmul("m", left, right)
        assert collector.sums["m"].dtype == dtype
        if dtype == torch.float32:  # added in place: no weight-sized temporary per batch
            assert collector.sums["m"].data_ptr() == storage
        summed = sum(left.double() @ right.double() for left, right in factors)
        expected = module.weight.detach().double() * summed
        scores = collector.scores(n_samples=2, n_real_tokens=15)
        assert collector.sums == {}  # released as scored: sums and scores are not held together
        torch.testing.assert_close(scores["m"], (expected / 2).float(), rtol=1e-6, atol=1e-6)


def test_one_batch_under_a_float32_budget_is_bitwise_the_float64_run(tensor_budgets):
    model, tokenizer = make_model("llama"), make_tokenizer()
    options = dict(tokenizer=tokenizer, level="weight", batch_size=len(TEXTS), progress=False)
    free = hf_sparc.attribute(model, TEXTS, **options)
    targets = _weight_targets(model)
    longest = max(len(tokenizer(t)["input_ids"]) for t in TEXTS)
    budget = plan_memory(model, targets, "weight", len(TEXTS) * longest, 2, None).estimate
    while plan_memory(model, targets, "weight", len(TEXTS) * longest, 2, budget).accumulator == torch.float64:
        budget = int(budget * 0.95)
    bounded = hf_sparc.attribute(model, TEXTS, max_memory=budget, **options)
    assert bounded.info.settings["accumulator"] == "float32"
    # the float32 sum of one batch is its fp32 matmul, as the float64 run's is; w · Σ and the
    # mean are formed in float64 in both, so they round identically
    assert all(torch.equal(bounded[name], free[name]) for name in free)


def test_the_process_memory_counts_against_a_cpu_budget():
    model, tokenizer = make_model("llama"), make_tokenizer()
    held = process_bytes(model, torch.device("cpu"))
    assert held > 50 * 2**20  # at least the interpreter and torch's libraries
    assert process_bytes(model, torch.device("cuda")) == 0  # accelerators: tensors only
    targets = _weight_targets(model)
    planned = plan_memory(model, targets, "weight", 64, 2, budget=None, held_by_process=held)
    assert planned.estimate == plan_memory(model, targets, "weight", 64, 2, budget=None).estimate + held
    with pytest.raises(MemoryError, match="the process's other memory"):
        hf_sparc.attribute(model, TEXTS, tokenizer=tokenizer, level="weight", max_memory=held // 2)
    # memory freed but kept by malloc is reusable, not held: a fragmented heap does not count
    kept = [torch.ones(100_000) for _ in range(1_000)]  # 400 MB in blocks that stay in the heap
    del kept[::2]
    assert process_bytes(model, torch.device("cpu")) < held + 300 * 2**20


def _disk_offloaded(model, directory):
    from accelerate import disk_offload

    return disk_offload(copy.deepcopy(model), offload_dir=str(directory), execution_device="cpu")


def _live_layer_weights(model):
    """A probe: every weight a decoder layer's modules load (weak references), and how many of them
    are alive when each layer starts."""
    loaded, alive = [], []
    for layer in model.model.layers:
        for module in layer.modules():
            if isinstance(module, torch.nn.Linear):
                forward = module._old_forward  # accelerate's: runs between loading and dropping

                def remember(*args, _module=module, _forward=forward, **kwargs):
                    loaded.append(weakref.ref(_module.weight))
                    return _forward(*args, **kwargs)

                module._old_forward = remember
        layer.register_forward_pre_hook(lambda *_: alive.append(sum(r() is not None for r in loaded)))
    return loaded, alive


def test_offloaded_weights_are_counted_one_layer_at_a_time(tmp_path, tensor_budgets):
    model, tokenizer = make_model("llama"), make_tokenizer()
    offloaded = _disk_offloaded(model, tmp_path)
    targets = _weight_targets(model)
    tokens = len(TEXTS) * max(len(tokenizer(t)["input_ids"]) for t in TEXTS)
    # loaded at once with checkpointing: one decoder layer's weights, or one other module's
    units = [sum(p.numel() * 4 for p in layer.parameters()) for layer in model.model.layers]
    units += [sum(p.numel() * 4 for p in module.parameters(recurse=False))
              for name, module in model.named_modules() if ".layers." not in name]  # fmt: skip
    model_bytes = sum(p.numel() * 4 for p in model.parameters())
    plain_floor = plan_memory(model, {}, "weight", tokens, 2, budget=None).estimate
    offloaded_floor = plan_memory(offloaded, {}, "weight", tokens, 2, budget=None).estimate
    assert offloaded_floor == plain_floor  # without checkpointing autograd keeps every loaded weight
    budget = plan_memory(model, targets, "weight", tokens, 2, budget=None).estimate
    while not plan_memory(offloaded, targets, "weight", tokens, 2, budget).gradient_checkpointing:
        budget = int(budget * 0.95)
    plain_plan = plan_memory(model, targets, "weight", tokens, 2, budget)
    offloaded_plan = plan_memory(offloaded, targets, "weight", tokens, 2, budget)
    # the same plan with one unit's weights in memory (plus one weight loaded to finish scores)
    largest = max(m.weight.numel() for m in targets.values()) * 4
    assert plain_plan.estimate - offloaded_plan.estimate == model_bytes - max(units) - largest

    options = dict(tokenizer=tokenizer, level="weight", batch_size=len(TEXTS), progress=False)
    free = hf_sparc.attribute(model, TEXTS, **options)
    loaded, alive = _live_layer_weights(offloaded)
    bounded = hf_sparc.attribute(offloaded, TEXTS, max_memory=budget, **options)
    assert bounded.info.settings["accumulator"] == "float32"
    assert all(torch.equal(bounded[name], free[name]) for name in free)
    forward = alive[:2]  # then the recomputations of the backward pass
    assert forward == [0, 0]  # no earlier layer's weights kept: loaded one layer at a time
    # and none left loaded after the run (recomputation is not stopped before the last module)
    assert len(loaded) == 4 * 7 and all(r() is None for r in loaded)  # 2 layers, forward + recompute
    alive.clear()
    hf_sparc.attribute(offloaded, TEXTS, **options)  # unbudgeted: every loaded weight kept
    assert alive[:2] == [0, 7]  # layer 0's seven projections
