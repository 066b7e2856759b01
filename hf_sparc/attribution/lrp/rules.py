"""LRP rules in Gradient×Input form, applied to ONE model instance and undone on exit.

The rules themselves come from lxt (the AttnLRP authors' library): ``identity_rule_implicit``
(element-wise non-linearities), ``divide_gradient`` (uniform rule on products) and
``stop_gradient`` (CP-LRP). Where they apply is decided here, per architecture spec:

* MLP activation: identity rule.
* Gated MLP ``act(gate) * up``: uniform rule — the gradient into each factor is halved, which
  we apply on the gate/up projection outputs (the identity rule in between is linear in the
  upstream gradient, so the halving commutes).
* Attention ``softmax(q kᵀ) v``: uniform rule on both products. ``q kᵀ`` halves the gradient to
  q and k, ``A v`` halves it to A (hence again to q, k) and to v: q and k get 1/4, v gets 1/2.
  Scaling the q/k/v projection outputs is therefore exact for *any* attention kernel (eager,
  SDPA, flash): their backward is linear in the upstream gradient and RoPE / q-k norms are
  linear under LRP. CP-LRP instead stops the gradient through q and k (A is a constant), which
  makes ``A v`` linear in v and the whole model conservative when it has no biases.
* RMSNorm with the std detached is ``x · w/σ``, a diagonal linear map: exactly the identity
  rule applied to the norm. LayerNorm with the std detached keeps the (conservative) mean
  subtraction, so it gets its own rule.

Nothing is patched on classes or modules of ``transformers``/``torch``: forward hooks are
registered on this model's modules and ``forward`` is shadowed on the instances only, then
removed again — also when the body raises.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from hf_sparc.architectures import decoder_layers, get_architecture, unwrap_model
from hf_sparc.attribution.patches import InstancePatches

LRP_METHODS = ("lrp", "cp-lrp")

_LXT_INSTALL_HINT = "Install it with `pip install --no-deps lxt==2.1` (see README, Install)."


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


def _layer_norm_rule(module: nn.LayerNorm) -> Callable[[torch.Tensor], torch.Tensor]:
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


def _qkv_rules(rules: ModuleType, conservative: bool) -> tuple[Callable[[torch.Tensor], torch.Tensor], ...]:
    """Backward rules for the query, key and value projection outputs (see module docstring)."""
    if conservative:
        return rules.stop_gradient, rules.stop_gradient, lambda v: v
    quarter = functools.partial(rules.divide_gradient, factor=4)
    return quarter, quarter, functools.partial(rules.divide_gradient, factor=2)


def _fused_qkv_rule(rules: Sequence[Callable[[torch.Tensor], torch.Tensor]]):
    def apply(output: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [rule(part) for rule, part in zip(rules, output.chunk(3, dim=-1), strict=True)], dim=-1
        )

    return apply


@contextmanager
def lrp_rules(model: nn.Module, method: str = "lrp") -> Iterator[nn.Module]:
    """Apply LRP backward rules to ``model`` (this instance only) inside a ``with`` block.

    Inside the block, ``input ⊙ grad`` of any tensor is its LRP relevance (AttnLRP for
    ``method="lrp"``, CP-LRP for ``"cp-lrp"``). Forward outputs are unchanged. On exit —
    normal or by exception — every hook and forward shadow is removed.

    Args:
        model: A supported ``*ForCausalLM`` model or a ``PeftModel`` around one.
        method: ``"lrp"`` (AttnLRP) or ``"cp-lrp"`` (q and k detached).

    Yields:
        The unwrapped ``transformers`` model the rules were applied to.
    """
    if method not in LRP_METHODS:
        raise ValueError(f"Unknown LRP method {method!r}; expected one of {LRP_METHODS}.")
    rules = lxt_rules()
    base = unwrap_model(model)
    spec = get_architecture(base)
    conservative = method == "cp-lrp"

    def identity_rule(forward: Callable) -> Callable:
        return functools.partial(rules.identity_rule_implicit, forward)

    patches = InstancePatches()
    try:
        for _, layer in decoder_layers(base, spec):
            activation = layer.get_submodule(spec.mlp_activation)
            patches.shadow_forward(activation, identity_rule)
            if spec.mlp_gate is not None:
                for part in (spec.mlp_gate, spec.mlp_up):
                    patches.map_output(layer.get_submodule(part), lambda out: rules.divide_gradient(out, 2))
            qkv_rules = _qkv_rules(rules, conservative)
            if spec.fused_qkv is not None:
                patches.map_output(layer.get_submodule(spec.fused_qkv), _fused_qkv_rule(qkv_rules))
            else:
                for part, rule in zip((spec.query, spec.key, spec.value), qkv_rules, strict=True):
                    patches.map_output(layer.get_submodule(part), rule)
        for module in base.modules():
            if isinstance(module, nn.LayerNorm):
                patches.shadow_forward(module, lambda _forward, m=module: _layer_norm_rule(m))
            elif type(module).__name__.endswith("RMSNorm"):
                patches.shadow_forward(module, identity_rule)
        yield base
    finally:
        patches.restore()
