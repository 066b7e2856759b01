"""Per-token norms of relevance: ``relevance_l2`` (``√Σₜ R²``) and ``relevance_wanda`` (``√Σₜ|R·C|``).

Eq. 8 sums a weight's relevance over the token positions of a sample, where signs cancel;
``Σₜ|R|`` (``absolute``) keeps every position but weighs a position by its relevance linearly.
Compression asks whether a weight can be removed on *every* token, and a few tokens with very
large relevance decide that: like Wanda's ``‖X‖₂`` (the L2 norm of the input over tokens),
``relevance_l2`` takes the L2 norm of the relevance over tokens,
``√(Σₜ R_t² / n)`` with ``R_t = w · g_t · x_t``, ``= |w| · √((g²)ᵀ(x²) / n)``: one matmul per batch,
the cost of the absolute sum. If the output gradient ``g`` were the same at every position this
would rank the weights of one output row exactly as Wanda does; LRP's ``g`` weighs each token by the
relevance flowing through that output there. ``n`` is the number of reference samples, so two
reference sets are comparable.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from hf_sparc.attribution.offload import parameter
from hf_sparc.attribution.signals.base import Accumulator, Counts, StreamedSignal
from hf_sparc.attribution.signals.relevance import attach_unit_hook, attach_weight_hook


class RelevanceL2Signal(StreamedSignal):
    """``√(mean over samples of Σₜ R_t²)`` per unit, ``R_t`` the relevance at token position t."""

    name = "relevance_l2"
    levels = ("weight", "neuron", "head")
    needs_gradient = True

    def attach(self, collector: Accumulator, name: str, module: nn.Module) -> RemovableHandle:
        if collector.level == "weight":
            return attach_weight_hook(collector, name, module, torch.square, torch.square)
        return attach_unit_hook(collector, name, lambda units: units.square().sum(0))

    def finish(self, total: torch.Tensor, module: nn.Module, level: str, counts: Counts) -> torch.Tensor:
        total = total.double().div_(counts.n_samples).sqrt_()
        if level == "weight":
            total.mul_(parameter(module).detach().to(total.device).abs())
        return total


class RelevanceWandaSignal(RelevanceL2Signal):
    """Wanda's score with each token weighed by relevance: ``√(Σₜ |R_t|·|C_t| / n)`` per weight,
    ``C_t = w · x_t`` its contribution to the output at position t (Wanda: ``√Σₜ C_t²``), which is
    ``|w| · √(|g|ᵀ(x²) / n)``: between Wanda (every token alike) and ``relevance_l2`` (``√Σₜ R_t²``,
    tokens weighed by ``g²``)."""

    name = "relevance_wanda"
    levels = ("weight",)

    # finished as relevance_l2's sums are: √(Σ / n) · |w|
    def attach(self, collector: Accumulator, name: str, module: nn.Module) -> RemovableHandle:
        return attach_weight_hook(collector, name, module, torch.square, torch.abs)
