"""Signals that need no data: ``magnitude`` (|W|) and ``random`` (the capacity-loss control)."""

from __future__ import annotations

import torch
from torch import nn

from hf_sparc.architectures.geometry import input_dim
from hf_sparc.attribution.offload import parameter
from hf_sparc.attribution.signals.base import WeightSignal


class MagnitudeSignal(WeightSignal):
    """``|W|``; a neuron's score is the L2 norm of the weights that produce it."""

    name = "magnitude"
    levels = ("weight", "neuron")

    def score(
        self, module: nn.Module, level: str, shape: tuple[int, ...], generator: torch.Generator
    ) -> torch.Tensor:
        weight = parameter(module).detach().float()
        if level == "weight":
            return weight.abs().cpu()
        return weight.cpu().norm(dim=input_dim(module))


class RandomSignal(WeightSignal):
    """Seeded uniform scores (no global RNG is touched)."""

    name = "random"
    levels = ("weight", "neuron", "head")

    def score(
        self, module: nn.Module, level: str, shape: tuple[int, ...], generator: torch.Generator
    ) -> torch.Tensor:
        return torch.rand(shape, generator=generator)
