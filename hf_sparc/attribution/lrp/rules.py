"""LRP rules in Gradient×Input form: lxt's rule functions, and how each is put on one module.

The rules themselves come from lxt (the AttnLRP authors' library): ``identity_rule_implicit``
(element-wise non-linearities), ``divide_gradient`` (uniform rule on products) and
``stop_gradient`` (CP-LRP). Each rule here is a small frozen value that knows how to apply itself
to one module instance through an :class:`~hf_sparc.attribution.patches.InstancePatches`:

* :class:`Identity` and :class:`LayerNormRule` shadow the module's ``forward``;
* :class:`DivideGradient` and :class:`StopGradient` map the module's output (identity forward,
  the rule in backward).

Where they go is :mod:`hf_sparc.attribution.lrp.placement`.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from hf_sparc.attribution.patches import InstancePatches

_LXT_INSTALL_HINT = "Install it with `pip install --no-deps lxt==2.1` (see README, Install)."

TensorMap = Callable[[torch.Tensor], torch.Tensor]


@functools.cache
def lxt_rules() -> ModuleType:
    """lxt's rule functions (``lxt/efficient/rules.py``).

    The module is loaded from its file because ``import lxt.efficient`` fails on transformers 5
    (its package ``__init__`` imports a BERT patch that uses removed transformers APIs); the
    rules file itself only needs torch.
    """
    spec = importlib.util.find_spec("lxt")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"LRP needs the `lxt` package, which is not installed. {_LXT_INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / "efficient" / "rules.py"
    if not path.is_file():
        raise ImportError(f"lxt at {path.parent.parent} has no efficient/rules.py. {_LXT_INSTALL_HINT}")
    module_spec = importlib.util.spec_from_file_location("hf_sparc._lxt_rules", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class Identity:
    """Identity rule on an element-wise non-linearity (or a norm that is diagonal-linear once its
    statistics are detached, as RMSNorm is)."""

    def apply(self, patches: InstancePatches, module: nn.Module) -> None:
        rules = lxt_rules()
        patches.shadow_forward(
            module, lambda forward: functools.partial(rules.identity_rule_implicit, forward)
        )


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
        return functools.partial(lxt_rules().divide_gradient, factor=self.factor)

    def apply(self, patches: InstancePatches, module: nn.Module) -> None:
        patches.map_output(module, self.output_map())


@dataclass(frozen=True)
class StopGradient:
    """No gradient through the output (CP-LRP's treatment of queries and keys)."""

    def output_map(self) -> TensorMap:
        return lxt_rules().stop_gradient

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
