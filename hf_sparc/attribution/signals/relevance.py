"""``relevance``: activation ⊙ gradient of the explained output, summed over real tokens.

LRP relevance when LRP rules are active (the rules change the gradient), Gradient×Input
otherwise. Neurons and heads are read at their unit site; a weight's relevance is
``w · Σ_t g_t x_t`` (its share of the output's relevance): one matmul per batch into the
accumulator, one product with ``w`` at the end.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from hf_sparc.architectures.geometry import is_transposed
from hf_sparc.attribution.offload import parameter
from hf_sparc.attribution.signals.base import Accumulator, Counts, StreamedSignal
from hf_sparc.attribution.sites import hook_unit_site
from hf_sparc.relevance import LEVELS

Elementwise = Callable[[torch.Tensor], torch.Tensor]
"""Applied to each token's activations and gradients before they are multiplied and summed."""


class RelevanceSignal(StreamedSignal):
    """Activation ⊙ gradient; the mean over reference samples of each sample's sum (paper Eq. 1)."""

    name = "relevance"
    levels = LEVELS
    needs_gradient = True

    def attach(self, collector: Accumulator, name: str, module: nn.Module) -> RemovableHandle:
        if collector.level == "weight":
            # Σ_t |w·g_t·x_t| = |w| · (|g|ᵀ|x|): per-token absolute weight relevance at the cost
            # of one matmul, because each token's contribution is a rank-1 outer product.
            absolute = torch.abs if collector.absolute else None
            return attach_weight_hook(collector, name, module, absolute, absolute)
        return attach_unit_hook(collector, name, lambda units: collector.sum_tokens(units))

    def finish(self, total: torch.Tensor, module: nn.Module, level: str, counts: Counts) -> torch.Tensor:
        # float64 whatever the accumulator: w · Σ is then exact and the mean rounds once, so a
        # float32-accumulated run over one batch equals the float64 one bit for bit
        total = total.double()
        if level == "weight":
            weight = parameter(module).detach().to(total.device)
            total.mul_(weight.abs() if counts.absolute else weight)
        return total.div_(counts.n_samples)


def attach_unit_hook(
    collector: Accumulator, name: str, reduce: Callable[[torch.Tensor], torch.Tensor]
) -> RemovableHandle:
    """Hook the unit site of target ``name``: each batch adds ``reduce`` of its per-token unit
    relevance ``[tokens, units]`` (activation ⊙ gradient, heads summed over head_dim)."""

    def observe(site: torch.Tensor) -> None:
        if not site.requires_grad:
            return
        # The hook must not reference ``site`` itself: tensor -> hook -> closure -> tensor is a
        # cycle that Python's GC cannot see through, so every batch's activations would leak.
        value, select = site.detach(), collector.select

        def on_grad(grad: torch.Tensor) -> None:
            tokens = collector.tokens(value, select) * collector.tokens(grad, select)
            collector.add(name, reduce(collector.units(tokens)))

        site.register_hook(on_grad)

    return hook_unit_site(collector.model, collector.spec, collector.level, name, observe)


def attach_weight_hook(
    collector: Accumulator,
    name: str,
    module: nn.Module,
    on_inputs: Elementwise | None,
    on_gradients: Elementwise | None,
) -> RemovableHandle:
    """Hook ``module`` so that each batch adds ``Σ_t on_gradients(g_t) on_inputs(x_t)ᵀ`` (``None``:
    as they are) to the sum of target ``name``: the weight's relevance without ``w``."""
    transposed = is_transposed(module)

    def hook(_module, inputs, output):
        if not output.requires_grad:
            return
        x, select = inputs[0], collector.select

        def on_grad(grad: torch.Tensor) -> None:
            xs, gs = collector.tokens(x, select), collector.tokens(grad, select)
            xs = xs if on_inputs is None else on_inputs(xs)
            gs = gs if on_gradients is None else on_gradients(gs)
            # w is the same in every batch, so it multiplies the sum once, in finish(): the
            # batches add Σ_t g_t x_t into the accumulator without a weight-sized temporary
            left, right = (xs.T, gs) if transposed else (gs.T, xs)
            collector.add_matmul(name, left, right)

        output.register_hook(on_grad)

    return module.register_forward_hook(hook, prepend=True)
