"""Streaming accumulation of one signal for one level over the reference data.

Units per level (keys of the resulting :class:`~hf_sparc.Relevance`):

* ``weight``: elements of a projection's weight (``nn.Linear`` or ``Conv1D``).
* ``neuron``: output features of a projection (default: the MLP up-projections).
* ``head``: heads of an attention module, read at the input of its output projection.
* ``token``: input positions (token + learned position embeddings; handled by the engine).

What is read where, and how sums become scores, is the signal's business
(:mod:`hf_sparc.attribution.signals`); the collector owns the accumulators and the choice of
real (non-padding) tokens. Each batch's contribution is computed in fp32 and summed over real
tokens as the batches stream by, so memory does not grow with the number of samples.
Accumulators are float64 by default: a sum of fp32 batch contributions is then (nearly) exact, so
the fp32 result does not depend on the order of the batches, on resuming, or on how many processes
shared them. Under a memory budget they may be float32 (4 bytes per unit;
:mod:`hf_sparc.attribution.memory`).
"""

from __future__ import annotations

import torch
from torch import nn

from hf_sparc.architectures import ArchitectureSpec
from hf_sparc.architectures.geometry import unit_shape
from hf_sparc.attribution.patches import InstancePatches
from hf_sparc.attribution.signals import Counts, StreamedSignal, WeightSignal


class Collector:
    """Accumulates one streamed signal for one level through the signal's hooks on the targets.

    ``sums`` (``dtype`` per target, added to in place) resume a saved run. ``select`` (bool
    ``[batch, seq]``, true on real tokens; ``None`` when every token is real) must be set before
    each forward.
    """

    def __init__(
        self,
        model: nn.Module,
        spec: ArchitectureSpec,
        level: str,
        signal: StreamedSignal,
        targets: dict[str, nn.Module],
        absolute: bool,
        sums: dict[str, torch.Tensor] | None = None,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        self.model, self.spec, self.level, self.signal = model, spec, level, signal
        self.targets = targets
        self.absolute = absolute
        self.sums: dict[str, torch.Tensor] = {} if sums is None else sums
        self.dtype = dtype
        self.select: torch.Tensor | None = None
        self.n_heads = model.config.num_attention_heads
        # (input tensor, its reduction) of the last shared() call: q/k/v (and gate/up) read one input
        self._last_shared: tuple[torch.Tensor, torch.Tensor] | None = None

    # -- what signals call from their hooks ----------------------------------------------------
    def add(self, name: str, value: torch.Tensor) -> None:
        """Add one batch's contribution to target ``name``'s sum (a copy: ``value`` may be shared)."""
        if name in self.sums:
            self.sums[name] += value
        else:
            self.sums[name] = value.to(self.dtype, copy=True)

    def add_matmul(self, name: str, left: torch.Tensor, right: torch.Tensor) -> None:
        """Add ``left @ right`` to target ``name``'s sum: in place (no temporary) into float32
        accumulators, through one fp32 product into float64 ones."""
        total = self.sums.get(name)
        if total is None:
            self.sums[name] = (left @ right).to(self.dtype)
        elif total.dtype == left.dtype:
            total.addmm_(left, right)
        else:
            total += left @ right

    def start_batch(self, select: torch.Tensor | None) -> None:
        """Set the real-token selection of the next forward (``None``: every token is real)."""
        self.select, self._last_shared = select, None

    def shared(self, tensor: torch.Tensor, reduce) -> torch.Tensor:
        """``reduce(tensor)``, computed once for consecutive calls on the same tensor (projections
        that share one input, such as q/k/v). The tensor itself is kept, so its memory cannot be
        reused by another tensor that would then match."""
        if self._last_shared is None or self._last_shared[0] is not tensor:
            self._last_shared = (tensor, reduce(tensor))
        return self._last_shared[1]

    @staticmethod
    def tokens(tensor: torch.Tensor, select: torch.Tensor | None) -> torch.Tensor:
        """Real-token rows of a ``[batch, seq, features]`` tensor, in fp32: ``[tokens, features]``.

        Some models (OPT) flatten to ``[batch·seq, features]`` inside the MLP; both work.
        """
        rows = tensor.reshape(-1, tensor.shape[-1])
        # Unpadded batches skip the boolean index: it copies every activation and gradient.
        return (rows if select is None else rows[select.reshape(-1)]).float()

    def units(self, per_token: torch.Tensor) -> torch.Tensor:
        """Reduce ``[tokens, features]`` to per-token unit scores (heads: sum over head_dim)."""
        if self.level == "head":
            return per_token.view(per_token.shape[0], self.n_heads, -1).sum(-1)
        return per_token

    def sum_tokens(self, per_token_units: torch.Tensor) -> torch.Tensor:
        """Sum over tokens, of ``|value|`` when attributing with ``absolute``."""
        return (per_token_units.abs() if self.absolute else per_token_units).sum(0)

    # -- run -----------------------------------------------------------------------------------
    def attach(self, patches: InstancePatches) -> None:
        for name, module in self.targets.items():
            patches.add(self.signal.attach(self, name, module).remove)

    def _shape(self, module: nn.Module) -> tuple[int, ...]:
        return unit_shape(self.level, module, self.n_heads)

    def scores(self, n_samples: int, n_real_tokens: int) -> dict[str, torch.Tensor]:
        """Final per-module scores after the last batch; the sums are consumed."""
        counts, result = Counts(n_samples, n_real_tokens, self.absolute), {}
        for name, module in self.targets.items():
            # each sum is released once finished: sums and scores are not held at once
            total = self.sums.pop(name, None)
            total = torch.zeros(self._shape(module), dtype=torch.float64) if total is None else total.cpu()
            result[name] = self.signal.finish(total, module, self.level, counts).float()
        return result

    def complete_sums(self, device: torch.device) -> dict[str, torch.Tensor]:
        """The accumulators with every target present (zeros where nothing was seen), as an
        all-reduce needs them: a process may have had no batch at all."""
        for name, module in self.targets.items():
            if name not in self.sums:
                self.sums[name] = torch.zeros(self._shape(module), dtype=self.dtype, device=device)
        return self.sums


def data_free_scores(
    model: nn.Module, level: str, signal: WeightSignal, targets: dict[str, nn.Module], seed: int
) -> dict[str, torch.Tensor]:
    """Scores of a signal that reads only the weights (``magnitude``, ``random``), target by target
    with one seeded generator."""
    generator = torch.Generator().manual_seed(seed)
    n_heads = model.config.num_attention_heads
    return {
        name: signal.score(module, level, unit_shape(level, module, n_heads), generator)
        for name, module in targets.items()
    }
