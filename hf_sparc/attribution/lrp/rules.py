"""LRP rules in Gradient×Input form, and how each is put on one module.

The rule functions (:mod:`hf_sparc.attribution.lrp.functions`: the identity rule on element-wise
non-linearities, the uniform rule on products, CP-LRP's stop-gradient) are AttnLRP's, as in lxt.
Each rule here is a small frozen value that knows how to apply itself to one module instance
through an :class:`~hf_sparc.attribution.patches.InstancePatches`:

* :class:`Identity` and :class:`LayerNormRule` shadow the module's ``forward``;
* :class:`DivideGradient` and :class:`StopGradient` map the module's output (identity forward,
  the rule in backward).

Where they go is :mod:`hf_sparc.attribution.lrp.placement`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from hf_sparc.attribution.lrp.functions import divide_gradient, identity_rule, stop_gradient
from hf_sparc.attribution.patches import InstancePatches

TensorMap = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Identity:
    """Identity rule on an element-wise non-linearity (or a norm that is diagonal-linear once its
    statistics are detached, as RMSNorm is)."""

    def apply(self, patches: InstancePatches, module: nn.Module) -> None:
        patches.shadow_forward(module, lambda forward: functools.partial(identity_rule, forward))


@dataclass(frozen=True)
class LayerNormRule:
    """LayerNorm with the std detached: keeps the (conservative) mean subtraction."""

    def apply(self, patches: InstancePatches, module: nn.Module) -> None:
        patches.shadow_forward(module, lambda _forward: _layer_norm_forward(module))


@dataclass(frozen=True)
class DivideGradient:
    """Uniform rule on one factor of a product: the gradient into the output is divided."""

    factor: int

    def output_map(self) -> TensorMap:
        return functools.partial(divide_gradient, factor=self.factor)

    def apply(self, patches: InstancePatches, module: nn.Module) -> None:
        patches.map_output(module, self.output_map())


@dataclass(frozen=True)
class StopGradient:
    """No gradient through the output (CP-LRP's treatment of queries and keys)."""

    def output_map(self) -> TensorMap:
        return stop_gradient

    def apply(self, patches: InstancePatches, module: nn.Module) -> None:
        patches.map_output(module, self.output_map())


OutputRule = DivideGradient | StopGradient
Rule = Identity | LayerNormRule | OutputRule


def _layer_norm_forward(module: nn.LayerNorm) -> TensorMap:
    def forward(x: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(-len(module.normalized_shape), 0))
        centered = x - x.mean(dims, keepdim=True)
        std = (centered.pow(2).mean(dims, keepdim=True) + module.eps).sqrt()
        y = centered / std.detach()
        if module.weight is not None:
            y = y * module.weight
        if module.bias is not None:
            y = y + module.bias
        return y

    return forward


def fused_output_map(rules: tuple[OutputRule | None, ...]) -> TensorMap:
    """One output map for a fused projection (e.g. GPT-2's ``c_attn``, q|k|v along the last
    dimension): each equal chunk gets its rule (``None``: unchanged)."""
    maps = [rule.output_map() if rule is not None else None for rule in rules]

    def apply(output: torch.Tensor) -> torch.Tensor:
        chunks = output.chunk(len(maps), dim=-1)
        return torch.cat([m(c) if m is not None else c for m, c in zip(maps, chunks, strict=True)], dim=-1)

    return apply
