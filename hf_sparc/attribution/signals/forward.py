"""Forward-only signals: ``activation`` (mean |activation| per unit) and ``wanda`` (|W|·‖X‖₂)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from hf_sparc.architectures.geometry import input_dim
from hf_sparc.attribution.offload import parameter
from hf_sparc.attribution.signals.base import Accumulator, Counts, StreamedSignal
from hf_sparc.attribution.sites import hook_unit_site


class ActivationSignal(StreamedSignal):
    """Mean ``|activation|`` of each unit over the real tokens (heads: summed over head_dim)."""

    name = "activation"
    levels = ("neuron", "head")

    def attach(self, collector: Accumulator, name: str, module: nn.Module) -> RemovableHandle:
        def observe(site: torch.Tensor) -> None:
            collector.add(name, collector.units(collector.tokens(site, collector.select).abs()).sum(0))

        return hook_unit_site(collector.model, collector.spec, collector.level, name, observe)

    def finish(self, total: torch.Tensor, module: nn.Module, level: str, counts: Counts) -> torch.Tensor:
        return total / max(counts.n_real_tokens, 1)


class WandaSignal(StreamedSignal):
    """``|W_ij| · ‖X_j‖₂ / √n`` with the norm over the ``n`` real tokens (Sun et al. 2023, per
    token); a neuron's score is the sum over the weights that produce it (structured Wanda).

    Dividing by ``√n`` (the root mean square of the input instead of its norm) does not change
    the ranking within one reference set (Wanda's pruning), but it makes scores of two sets
    comparable: repeating the texts leaves them unchanged, so a contrastive difference measures
    the inputs, not how many tokens each set has."""

    name = "wanda"
    levels = ("weight", "neuron")

    def attach(self, collector: Accumulator, name: str, module: nn.Module) -> RemovableHandle:
        def squared_inputs(_module, inputs) -> None:
            # projections fed the same input (q/k/v, gate/up) reduce it once
            squares = collector.shared(
                inputs[0], lambda x: collector.tokens(x, collector.select).pow(2).sum(0)
            )
            collector.add(name, squares)

        return module.register_forward_pre_hook(squared_inputs, prepend=True)

    def finish(self, total: torch.Tensor, module: nn.Module, level: str, counts: Counts) -> torch.Tensor:
        # one per input feature; the weight-sized product stays fp32, formed in place
        norms = (total.float() / max(counts.n_real_tokens, 1)).sqrt()
        weight = parameter(module).detach().cpu()
        along_inputs = [1, 1]
        along_inputs[input_dim(module)] = -1
        score = weight.abs() if weight.dtype == torch.float32 else weight.float().abs_()
        score.mul_(norms.view(along_inputs))
        return score.sum(input_dim(module)) if level == "neuron" else score
