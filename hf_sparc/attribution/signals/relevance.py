"""``relevance``: activation ⊙ gradient of the explained output, summed over real tokens.

LRP relevance when LRP rules are active (the rules change the gradient), Gradient×Input
otherwise. Neurons and heads are read at their unit site; a weight's relevance is
``w · Σ_t g_t x_t`` (its share of the output's relevance), one matmul per batch.
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


class RelevanceSignal(StreamedSignal):
    """Activation ⊙ gradient; the mean over reference samples of each sample's sum (paper Eq. 1)."""

    name = "relevance"
    levels = LEVELS
    needs_gradient = True

    def attach(self, collector: Accumulator, name: str, module: nn.Module) -> RemovableHandle:
        if collector.level == "weight":
            return module.register_forward_hook(_weight_hook(collector, name, module), prepend=True)
        return hook_unit_site(
            collector.model,
            collector.spec,
            collector.level,
            name,
            lambda site: _observe(collector, name, site),
        )

    def finish(self, total: torch.Tensor, module: nn.Module, level: str, counts: Counts) -> torch.Tensor:
        return total / counts.n_samples


def _observe(collector: Accumulator, name: str, site: torch.Tensor) -> None:
    if not site.requires_grad:
        return
    # The hook must not reference ``site`` itself: tensor -> hook -> closure -> tensor is a cycle
    # that Python's GC cannot see through, so every batch's activations would leak.
    value, select = site.detach(), collector.select

    def on_grad(grad: torch.Tensor) -> None:
        tokens = collector.tokens(value, select) * collector.tokens(grad, select)
        collector.add(name, collector.sum_tokens(collector.units(tokens)))

    site.register_hook(on_grad)


def _weight_hook(collector: Accumulator, name: str, module: nn.Module) -> Callable:
    transposed = is_transposed(module)

    def hook(_module, inputs, output):
        if not output.requires_grad:
            return
        x, select = inputs[0], collector.select

        def on_grad(grad: torch.Tensor) -> None:
            weight = parameter(module).to(grad.device).float()
            xs, gs = collector.tokens(x, select), collector.tokens(grad, select)
            if collector.absolute:
                # Σ_t |w·g_t·x_t| = |w| · (|g|ᵀ|x|): per-token absolute weight relevance at the
                # cost of one matmul, because each token's contribution is a rank-1 outer product.
                xs, gs, weight = xs.abs(), gs.abs(), weight.abs()
            outer = xs.T @ gs if transposed else gs.T @ xs
            collector.add(name, weight * outer)

        output.register_hook(on_grad)

    return hook
