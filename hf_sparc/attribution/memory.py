"""Planning an attribution run to a memory budget (``attribute(..., max_memory="8GB")``).

What a run holds besides the model: one accumulator per scored unit (float64: 8 bytes, exact; or
float32: 4 bytes), the activations the backward pass needs, and (weight level) transients the size
of the largest scored module: a batch's fp32 product on its way into float64 accumulators (float32
ones take it in place) and, when scores are finished, one float64 and one fp32 copy. Sums are
released as their scores are made, so sums and scores are never held at once.
:func:`plan_memory` estimates these from the model's shape and picks, in this order, until the estimate fits:

1. float64 accumulators (exact sums: any batch order, resume and process count give bitwise the
   same fp32 result);
2. float32 accumulators (4 bytes per unit; sums of fp32 contributions over the batches, relative
   error ≲ n_batches · 2⁻²⁴ per unit, so rankings agree with the float64 run up to near-ties);
3. gradient checkpointing (activations of one decoder layer instead of all);
4. the targets split into layer groups attributed in successive passes over the data (each pass
   holds the accumulators of one group only; the data is read once per group).

It logs what it chose and raises ``MemoryError`` with the smallest budget that would fit when even
one decoder layer's targets per pass do not.
"""

from __future__ import annotations

import logging
import math
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

    def describe(self) -> str:
        dtype = str(self.accumulator).removeprefix("torch.")
        passes = f"{len(self.groups)} passes over the data" if len(self.groups) > 1 else "one pass"
        checkpointing = ", gradient checkpointing" if self.gradient_checkpointing else ""
        return f"{dtype} accumulators{checkpointing}, {passes}; estimated peak {self.estimate / 1e9:.2f} GB"


@dataclass(frozen=True)
class _Costs:
    model: int  # parameters and buffers
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
    model_bytes = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    return _Costs(
        model=model_bytes,
        activations=layers * per_layer + vocab,
        checkpointed=layers * tokens * hidden * 4 + per_layer + vocab,
        units=units,
        transient=transient,
    )


def _layer_groups(targets: dict[str, nn.Module]) -> list[tuple[str, ...]]:
    """Targets grouped by decoder layer number (targets outside the layers form one group)."""
    groups: dict[str, list[str]] = {}
    for name in targets:
        match = _LAYER_NUMBER.search(name)
        groups.setdefault(match[1] if match else "", []).append(name)
    return [tuple(names) for names in groups.values()]


def plan_memory(
    model: nn.Module, targets: dict[str, nn.Module], level: str, tokens: int, layers: int, budget: int | None
) -> MemoryPlan:
    """The cheapest plan whose estimated peak fits ``budget`` bytes (see the module docstring);
    without a budget: float64 accumulators, one pass. ``tokens``: tokens per batch."""
    costs = _costs(model, targets, level, tokens, layers)
    everything = (tuple(targets),)

    def peak(dtype_bytes: int, checkpointing: bool, groups) -> int:
        held = max((sum(costs.units[n] for n in group) for group in groups), default=0) * dtype_bytes
        activations = costs.checkpointed if checkpointing else costs.activations
        return costs.model + activations + held + costs.transient

    if budget is None:
        return MemoryPlan(torch.float64, False, everything, peak(8, False, everything))
    candidates = [(torch.float64, 8, False), (torch.float32, 4, False), (torch.float32, 4, True)]
    for dtype, size, checkpointing in candidates:
        estimate = peak(size, checkpointing, everything)
        if estimate <= budget:
            return _chosen(MemoryPlan(dtype, checkpointing, everything, estimate))
    by_layer = _layer_groups(targets)
    fixed = peak(4, True, ())
    room = budget - fixed
    largest = max(sum(costs.units[n] for n in group) for group in by_layer) * 4
    if room < largest:
        raise MemoryError(
            f"max_memory={budget / 1e9:.2f} GB cannot be met: the model ({costs.model / 1e9:.2f} GB), "
            f"checkpointed activations and one decoder layer's float32 accumulators need "
            f"{(fixed + largest) / 1e9:.2f} GB; lower batch_size/max_length or give at least that much."
        )
    groups, current, held = [], [], 0
    for group in by_layer:
        size = sum(costs.units[n] for n in group) * 4
        if current and held + size > room:
            groups.append(tuple(current))
            current, held = [], 0
        current.extend(group)
        held += size
    groups.append(tuple(current))
    return _chosen(MemoryPlan(torch.float32, True, tuple(groups), peak(4, True, groups)))


def _chosen(plan: MemoryPlan) -> MemoryPlan:
    logger.info("hf_sparc attribution memory plan: %s", plan.describe())
    return plan
