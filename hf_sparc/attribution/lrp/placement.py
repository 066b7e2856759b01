"""Where each LRP variant puts its rules (lxt-style placement maps), and applying one to a model.

AttnLRP (``"lrp"``):

* MLP activation: identity rule.
* Gated MLP ``act(gate) * up``: uniform rule — the gradient into each factor is halved, which
  we apply on the gate/up projection outputs (the identity rule in between is linear in the
  upstream gradient, so the halving commutes).
* Attention ``softmax(q kᵀ) v``: uniform rule on both products. ``q kᵀ`` halves the gradient to
  q and k, ``A v`` halves it to A (hence again to q, k) and to v: q and k get 1/4, v gets 1/2.
  Scaling the q/k/v projection outputs is therefore exact for *any* attention kernel (eager,
  SDPA, flash): their backward is linear in the upstream gradient and RoPE / q-k norms are
  linear under LRP.
* RMSNorm with the std detached is ``x · w/σ``, a diagonal linear map: exactly the identity
  rule applied to the norm. LayerNorm with the std detached keeps the (conservative) mean
  subtraction, so it gets its own rule.

CP-LRP (``"cp-lrp"``) is the same map except attention: it stops the gradient through q and k
(A is a constant), which makes ``A v`` linear in v (v keeps its gradient) and the whole model
conservative when it has no biases.

Nothing is patched on classes or modules of ``transformers``/``torch``: forward hooks are
registered on this model's modules and ``forward`` is shadowed on the instances only, then
removed again — also when the body raises.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from torch import nn

from hf_sparc.architectures import ArchitectureSpec, decoder_layers, get_architecture, unwrap_model
from hf_sparc.attribution.lrp.rules import (
    DivideGradient,
    Identity,
    LayerNormRule,
    OutputRule,
    Rule,
    StopGradient,
    fused_output_map,
)
from hf_sparc.attribution.patches import InstancePatches


@dataclass(frozen=True)
class Placement:
    """Which rule goes on which part of every decoder layer, and on the norms.

    Attributes:
        mlp_activation: On the MLP's element-wise activation.
        gated_mlp: On the gate and up projection outputs of a gated MLP (``None``: no rule).
        attention: On the query, key and value projection outputs (or the chunks of a fused
            q|k|v projection); ``None``: no rule.
        layer_norm: On every ``nn.LayerNorm``.
        rms_norm: On every ``*RMSNorm``.
    """

    mlp_activation: Rule
    gated_mlp: Rule | None
    attention: tuple[OutputRule | None, OutputRule | None, OutputRule | None]
    layer_norm: Rule
    rms_norm: Rule


ATTN_LRP = Placement(
    mlp_activation=Identity(),
    gated_mlp=DivideGradient(2),
    attention=(DivideGradient(4), DivideGradient(4), DivideGradient(2)),
    layer_norm=LayerNormRule(),
    rms_norm=Identity(),
)
CP_LRP = dataclasses.replace(ATTN_LRP, attention=(StopGradient(), StopGradient(), None))

PLACEMENTS: dict[str, Placement] = {"lrp": ATTN_LRP, "cp-lrp": CP_LRP}
LRP_METHODS = tuple(PLACEMENTS)


def _place_in_layer(placement: Placement, spec: ArchitectureSpec, layer: nn.Module, patches: InstancePatches):
    placement.mlp_activation.apply(patches, layer.get_submodule(spec.mlp_activation))
    if spec.mlp_gate is not None and placement.gated_mlp is not None:
        for part in (spec.mlp_gate, spec.mlp_up):
            placement.gated_mlp.apply(patches, layer.get_submodule(part))
    if spec.fused_qkv is not None:
        patches.map_output(layer.get_submodule(spec.fused_qkv), fused_output_map(placement.attention))
        return
    for part, rule in zip((spec.query, spec.key, spec.value), placement.attention, strict=True):
        if rule is not None:
            rule.apply(patches, layer.get_submodule(part))


def _place(placement: Placement, model: nn.Module, spec: ArchitectureSpec, patches: InstancePatches) -> None:
    for _, layer in decoder_layers(model, spec):
        _place_in_layer(placement, spec, layer, patches)
    for module in model.modules():
        if isinstance(module, nn.LayerNorm):
            placement.layer_norm.apply(patches, module)
        elif type(module).__name__.endswith("RMSNorm"):
            placement.rms_norm.apply(patches, module)


@contextmanager
def lrp_rules(model: nn.Module, method: str = "lrp") -> Iterator[nn.Module]:
    """Apply LRP backward rules to ``model`` (this instance only) inside a ``with`` block.

    Inside the block, ``input ⊙ grad`` of any tensor is its LRP relevance (AttnLRP for
    ``method="lrp"``, CP-LRP for ``"cp-lrp"``). Forward outputs are unchanged. On exit —
    normal or by exception — every hook and forward shadow is removed.

    Args:
        model: A supported ``*ForCausalLM`` model or a ``PeftModel`` around one.
        method: A key of :data:`PLACEMENTS`: ``"lrp"`` (AttnLRP) or ``"cp-lrp"`` (q and k detached).

    Yields:
        The unwrapped ``transformers`` model the rules were applied to.
    """
    if method not in PLACEMENTS:
        raise ValueError(f"Unknown LRP method {method!r}; expected one of {LRP_METHODS}.")
    base = unwrap_model(model)
    patches = InstancePatches()
    try:
        _place(PLACEMENTS[method], base, get_architecture(base), patches)
        yield base
    finally:
        patches.restore()
