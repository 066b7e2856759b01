"""Planning an attribution run to a memory budget (``attribute(..., max_memory="8GB")``).

What a run holds besides the model: one accumulator per scored unit (float64: 8 bytes, exact; or
float32: 4 bytes), the activations the backward pass needs, and (weight level) transients the size
of the largest scored module: a batch's fp32 product on its way into float64 accumulators (float32
ones take it in place) and, when scores are finished, one float64 and one fp32 copy. Sums are
released as their scores are made, so sums and scores are never held at once. On CPU the budget is
the process's: what it already holds besides the model (interpreter, libraries, data: its resident
memory minus the model's tensors, once malloc has returned its free pages) counts too.

Weights offloaded by ``accelerate`` (``disk_offload``, ``device_map`` with ``"disk"``/``"cpu"``
entries on a GPU) are loaded one module at a time, but autograd keeps each loaded weight for the
backward pass, so without checkpointing they are all held at the end of the forward; with
checkpointing one decoder layer's are (recomputed in the backward pass, loaded again), or one other
module's (the output embedding until its backward).
:func:`plan_memory` estimates these from the model's shape and picks, in this order, until the estimate fits:

1. float64 accumulators (exact sums: any batch order, resume and process count give bitwise the
   same fp32 result);
2. float32 accumulators (4 bytes per unit; sums of fp32 contributions over the batches, relative
   error ≲ n_batches · 2⁻²⁴ per unit, so rankings agree with the float64 run up to near-ties);
3. gradient checkpointing (activations of one decoder layer instead of all);
4. the targets split into layer groups attributed in successive passes over the data (each pass
   holds the accumulators of one group only; the data is read once per group). Finished scores are
   float32 in CPU memory, which is outside an accelerator's budget; on CPU they would add up during
   the passes, so each finished group's scores wait in a temporary folder on disk until the last
   pass is over (``MemoryPlan.spill``). The relevance itself (4 bytes per unit) is held at the end
   in any case, with the model's resident weights but without a batch's activations.

It logs what it chose and raises ``MemoryError`` with the smallest budget that would fit when even
one decoder layer's targets per pass do not. Budgets below the model's own size need offloaded weights
(what fits on a 1.1B model, and what does not: docs/BENCHMARKS.md, "Scale").
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import math
import os
import re
from dataclasses import dataclass

import torch
from torch import nn

from hf_sparc.architectures.geometry import unit_shape

logger = logging.getLogger("hf_sparc")

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}  # fmt: skip
_LAYER_NUMBER = re.compile(r"\.(\d+)\.")


def parse_bytes(value: int | str) -> int:
    """``8_000_000_000``, ``"8GB"`` (10⁹), ``"7.5GiB"`` (2³⁰) or ``"512MB"`` as bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        amount = value
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?I?B?)\s*", str(value).upper())
        if match is None or match[2] not in _UNITS:
            raise ValueError(f"max_memory must be bytes or a size like '8GB' or '7.5GiB', got {value!r}.")
        amount = int(float(match[1]) * _UNITS[match[2]])
    if amount <= 0:
        raise ValueError(f"max_memory must be positive, got {value!r}.")
    return amount


@dataclass(frozen=True)
class MemoryPlan:
    """How a run meets its budget: accumulator dtype, checkpointing, and the target groups (one
    pass over the data each); ``estimate`` is the planned peak in bytes, model included."""

    accumulator: torch.dtype
    gradient_checkpointing: bool
    groups: tuple[tuple[str, ...], ...]
    estimate: int
    held_by_process: int = 0
    spill: bool = False  # finished groups' scores wait on disk until the last pass is over

    def describe(self) -> str:
        dtype = str(self.accumulator).removeprefix("torch.")
        passes = f"{len(self.groups)} passes over the data" if len(self.groups) > 1 else "one pass"
        passes += " (finished scores kept on disk between them)" if self.spill else ""
        checkpointing = ", gradient checkpointing" if self.gradient_checkpointing else ""
        held = f" ({self.held_by_process / 1e9:.2f} GB of it held by the process before the run)"
        return (f"{dtype} accumulators{checkpointing}, {passes}; estimated peak {self.estimate / 1e9:.2f} GB"
                + (held if self.held_by_process else ""))  # fmt: skip


@dataclass(frozen=True)
class _Costs:
    resident: int  # parameters and buffers in memory (not offloaded)
    model: int  # parameters and buffers (offloaded ones included: all held after the forward)
    model_checkpointed: int  # the same when offloaded decoder layers are loaded one at a time
    activations: int  # kept for the backward pass, all layers
    checkpointed: int  # the same with gradient checkpointing
    units: dict[str, int]  # accumulator entries per target
    transient: int  # largest weight-sized temporaries at once (weight level), else 0


def _costs(model: nn.Module, targets: dict[str, nn.Module], level: str, tokens: int, layers: int) -> _Costs:
    config = model.config
    hidden = config.hidden_size
    intermediate = getattr(config, "intermediate_size", None) or 4 * hidden
    # per token and layer, fp32: residual/norm/attention inputs and outputs (~10·hidden), the MLP's
    # gate/up/activation products (~4·intermediate); attention weights are not kept (SDPA)
    per_layer = tokens * (10 * hidden + 4 * intermediate) * 4
    vocab = tokens * config.vocab_size * 4 * 2  # logits and their gradient
    n_heads = config.num_attention_heads
    units = {name: math.prod(unit_shape(level, module, n_heads)) for name, module in targets.items()}
    # finishing a module: a float64 copy of its sum and the fp32 scores (12 bytes per weight)
    transient = max((u * 12 for u in units.values()), default=0) if level == "weight" else 0
    resident, offloaded = _model_bytes(model)
    if level == "weight" and offloaded:  # finishing a module loads its weight once more
        transient += max((u * 4 for u in units.values()), default=0)
    return _Costs(
        resident=resident,
        model=resident + sum(offloaded.values()),
        model_checkpointed=resident + max(offloaded.values(), default=0),
        activations=layers * per_layer + vocab,
        checkpointed=layers * tokens * hidden * 4 + per_layer + vocab,
        units=units,
        transient=transient,
    )


def _refuse(budget: int, held_by_process: int, costs: _Costs, needed: int) -> None:
    offload = "" if costs.model_checkpointed < costs.model else (
        " or offload the weights (accelerate's disk_offload, device_map with 'disk') so that one "
        "decoder layer's are loaded at a time"
    )  # fmt: skip
    raise MemoryError(
        f"max_memory={budget / 1e9:.2f} GB cannot be met: the process's other memory "
        f"({held_by_process / 1e9:.2f} GB), the model's weights ({costs.model_checkpointed / 1e9:.2f} GB "
        f"in memory at once), checkpointed activations and float32 accumulators or scores need "
        f"{needed / 1e9:.2f} GB; lower batch_size/max_length{offload}, or give at least that much."
    )


def _model_bytes(model: nn.Module) -> tuple[int, dict[str, int]]:
    """Bytes of the tensors in memory, and of the offloaded (``meta``) ones per unit that is loaded
    at once: a decoder layer (by its number), or another module (by its name)."""
    resident, offloaded = 0, {}
    for name, tensor in (*model.named_parameters(), *model.named_buffers()):
        size = tensor.numel() * tensor.element_size()
        if tensor.device.type != "meta":
            resident += size
            continue
        match = _LAYER_NUMBER.search(name)
        key = match[1] if match else name.rpartition(".")[0]
        offloaded[key] = offloaded.get(key, 0) + size
    return resident, offloaded


def _layer_groups(targets: dict[str, nn.Module]) -> list[tuple[str, ...]]:
    """Targets grouped by decoder layer number (targets outside the layers form one group)."""
    groups: dict[str, list[str]] = {}
    for name in targets:
        match = _LAYER_NUMBER.search(name)
        groups.setdefault(match[1] if match else "", []).append(name)
    return [tuple(names) for names in groups.values()]


def plan_memory(
    model: nn.Module,
    targets: dict[str, nn.Module],
    level: str,
    tokens: int,
    layers: int,
    budget: int | None,
    *,
    held_by_process: int = 0,
    scores_in_budget: bool = False,
) -> MemoryPlan:
    """The cheapest plan whose estimated peak fits ``budget`` bytes (see the module docstring);
    without a budget: float64 accumulators, one pass. ``tokens``: tokens per batch;
    ``held_by_process``: memory the process holds besides the model (:func:`process_bytes`);
    ``scores_in_budget``: finished scores (float32, formed in CPU memory) count against the budget,
    as on CPU: then the relevance itself is held at the end, and passes keep finished groups' scores
    on disk (``spill``)."""
    costs = _costs(model, targets, level, tokens, layers)
    everything = (tuple(targets),)
    total_units = sum(costs.units.values())

    spill = scores_in_budget  # passes on CPU keep finished scores on disk
    end = held_by_process + costs.resident + total_units * 4  # the relevance, after the last pass

    def peak(dtype_bytes: int, checkpointing: bool, groups) -> int:
        held = max((sum(costs.units[n] for n in group) for group in groups), default=0) * dtype_bytes
        activations = costs.checkpointed if checkpointing else costs.activations
        weights = costs.model_checkpointed if checkpointing else costs.model
        during = held_by_process + weights + activations + held + costs.transient
        return max(during, end) if spill and len(groups) > 1 else during

    if budget is None:
        return MemoryPlan(torch.float64, False, everything, peak(8, False, everything), held_by_process)
    candidates = [(torch.float64, 8, False), (torch.float32, 4, False), (torch.float32, 4, True)]
    for dtype, size, checkpointing in candidates:
        estimate = peak(size, checkpointing, everything)
        if estimate <= budget:
            return _chosen(MemoryPlan(dtype, checkpointing, everything, estimate, held_by_process))
    by_layer = _layer_groups(targets)
    fixed = peak(4, True, ())
    room = budget - fixed
    largest = max(sum(costs.units[n] for n in group) for group in by_layer) * 4
    if room < largest or (spill and end > budget):
        _refuse(budget, held_by_process, costs, max(fixed + largest, end if spill else 0))
    groups, current, held = [], [], 0
    for group in by_layer:
        size = sum(costs.units[n] for n in group) * 4
        if current and held + size > room:
            groups.append(tuple(current))
            current, held = [], 0
        current.extend(group)
        held += size
    groups.append(tuple(current))
    plan = MemoryPlan(torch.float32, True, tuple(groups), peak(4, True, groups), held_by_process,
                      spill=spill and len(groups) > 1)  # fmt: skip
    return _chosen(plan)


def process_bytes(model: nn.Module, device: torch.device) -> int:
    """What the process holds besides ``model``'s tensors, on CPU: its resident memory minus the
    model's CPU tensors, after malloc has given its free pages back to the OS (Linux with glibc;
    0 elsewhere and on accelerators, whose budget counts tensors only).

    glibc keeps freed blocks, which the run would reuse; its free-heap total (``mallinfo2``) cannot
    be subtracted instead, as it also counts pages never touched or already released (it exceeded
    the resident memory once, and the plan then counted nothing). ``malloc_trim`` changes no
    setting: it returns free pages, which a later allocation faults in again."""
    if device.type != "cpu":
        return 0
    _release_free_heap()
    try:
        with open("/proc/self/statm") as statm:
            rss = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0
    tensors = (*model.parameters(), *model.buffers())
    model_bytes = sum(t.numel() * t.element_size() for t in tensors if t.device.type == "cpu")
    return max(rss - model_bytes, 0)


def _release_free_heap() -> None:
    with contextlib.suppress(OSError, AttributeError):  # not glibc
        ctypes.CDLL(None).malloc_trim(0)


def _chosen(plan: MemoryPlan) -> MemoryPlan:
    logger.info("hf_sparc attribution memory plan: %s", plan.describe())
    return plan
