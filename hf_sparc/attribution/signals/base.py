"""What a signal is: how one kind of score is read from a model (see :mod:`.signals`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Protocol

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from hf_sparc.architectures import ArchitectureSpec


class Accumulator(Protocol):
    """What a streamed signal's hooks use (implemented by
    :class:`~hf_sparc.attribution.collector.Collector`): the model, the level, the current batch's
    real-token selection and the sums."""

    model: nn.Module
    spec: ArchitectureSpec
    level: str
    absolute: bool
    select: torch.Tensor | None

    def add(self, name: str, value: torch.Tensor) -> None: ...

    def add_matmul(self, name: str, left: torch.Tensor, right: torch.Tensor) -> None: ...

    def shared(self, tensor: torch.Tensor, reduce) -> torch.Tensor: ...

    def tokens(self, tensor: torch.Tensor, select: torch.Tensor | None) -> torch.Tensor: ...

    def units(self, per_token: torch.Tensor) -> torch.Tensor: ...

    def sum_tokens(self, per_token_units: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class Counts:
    """What finishing the accumulated sums needs: the reference samples and real (non-padding)
    tokens they are divided by, and whether ``|R|`` was summed (``absolute``)."""

    n_samples: int
    n_real_tokens: int
    absolute: bool = False


class Signal(ABC):
    """How components are scored. Subclass :class:`StreamedSignal` (reads the data) or
    :class:`WeightSignal` (reads only the weights), then add an
    :class:`~hf_sparc.attribution.signals.AttributionMethod` that uses it to ``METHODS``."""

    name: ClassVar[str]
    levels: ClassVar[tuple[str, ...]]
    needs_data: ClassVar[bool] = True
    needs_gradient: ClassVar[bool] = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self)

    def __hash__(self) -> int:
        return hash(type(self))


class StreamedSignal(Signal):
    """A signal summed over the real tokens of the reference data as the batches stream by."""

    @abstractmethod
    def attach(self, collector: Accumulator, name: str, module: nn.Module) -> RemovableHandle:
        """Hook ``module`` (target ``name``) so that each batch adds its part with ``collector.add``."""

    @abstractmethod
    def finish(self, total: torch.Tensor, module: nn.Module, level: str, counts: Counts) -> torch.Tensor:
        """The final scores of one target from its sum ``total`` (on the CPU; float64, or float32
        under a memory budget). ``total`` is not used afterwards: it may be changed in place."""


class WeightSignal(Signal):
    """A signal computed from the weights alone, without data."""

    needs_data: ClassVar[bool] = False

    @abstractmethod
    def score(
        self, module: nn.Module, level: str, shape: tuple[int, ...], generator: torch.Generator
    ) -> torch.Tensor:
        """Scores of ``module``'s units (``shape``); ``generator`` is the run's seeded generator."""
