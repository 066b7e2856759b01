"""Writing a SPARC layer's masks into its base weights: merge/unmerge, and zero-cost inference.

Two owners write the same way — zero (soft: scale) the pruned rows/columns/elements in place and
keep the original values, so that restoring is bit for bit:

- **merge** (PEFT's ``merge_adapter``/``merge_and_unload``): on request, until ``unmerge``;
- **applied** neuron and head masks: while an adapter is active and no gradient reaches the weight
  (inference: ``generate``, ``torch.no_grad``), its units are zeroed in the weights once instead of
  masking every forward's activations, so an active adapter costs nothing per token. The first
  forward that needs the originals back (adapters disabled or switched, a training forward, a merge,
  ``unload``) restores them first. With a weight of ``requires_grad=True`` under autograd the layer
  masks activations as before, so no gradient ever flows into a zeroed unit.
"""

from __future__ import annotations

import warnings

import torch
from peft.tuners.tuners_utils import check_adapters_to_merge

from hf_sparc.architectures import geometry

Originals = tuple[torch.Tensor, torch.Tensor | None]
"""The pruned weight slice and (neuron level) bias entries as they were before writing."""


class InWeights:
    """Mixin of :class:`~hf_sparc.tuner.layer.SparcLayer`: merge, unmerge and applied masks."""

    def _init_in_weights(self) -> None:
        # pruned weight entries (and bias entries) as they were before merge(), per merged adapter
        self._originals: dict[str, Originals] = {}
        # applied adapters: their key (names + index/scale versions) and originals, in write order
        self._applied_key: tuple = ()
        self._applied: list[tuple[str, Originals]] = []

    def _merge_target(self, adapter_name: str) -> tuple[torch.Tensor, int, torch.Tensor]:
        """(weight view, dim, ids) such that ``view.index_fill_(dim, ids, 0)`` prunes the adapter."""
        weight = self.base_layer.weight.data
        level = self.pruning_level[adapter_name]
        if level == "weight":
            return weight.view(-1), 0, self.indices(adapter_name)
        return weight, geometry.unit_weight_slice(level, self.base_layer), self.features(adapter_name)

    def _write(self, name: str) -> Originals:
        """Zero (scale) the adapter's units in the base weight and bias; return the originals."""
        view, dim, ids = self._merge_target(name)
        scales = self.feature_scales(name)
        bias = self.base_layer.bias
        saved_bias = None
        if self.pruning_level[name] == "neuron" and bias is not None:
            saved_bias = bias.data[ids].clone()
            bias.data[ids] = 0 if scales is None else saved_bias * scales.to(bias.dtype)
        saved = view.index_select(dim, ids)
        if scales is None:
            view.index_fill_(dim, ids, 0)
        else:
            shape = [-1 if d == dim else 1 for d in range(view.dim())]
            view.index_copy_(dim, ids, saved * scales.to(view.dtype).view(shape))
        return saved, saved_bias

    def _restore(self, name: str, originals: Originals) -> None:
        saved_weight, saved_bias = originals
        view, dim, ids = self._merge_target(name)
        view.index_copy_(dim, ids, saved_weight.to(view.device, view.dtype))
        if saved_bias is not None:
            bias = self.base_layer.bias
            bias.data[ids] = saved_bias.to(bias.device, bias.dtype)

    # -- applied masks (inference) -------------------------------------------------------------
    def _appliable(self, pending: dict[str, list[str]]) -> list[str]:
        """The pending neuron/head adapters to write into the weights for this forward (none when
        a gradient would reach the weight, or the weight is quantized)."""
        if self.quantized or (torch.is_grad_enabled() and self.base_layer.weight.requires_grad):
            return []
        return pending["head"] + pending["neuron"]

    def _hold_in_weights(self, names: list[str]) -> None:
        """Make exactly ``names`` the applied adapters (restoring any others first)."""
        key = tuple((name, self._stamp(name)) for name in names)
        if key == self._applied_key:
            return
        self.restore_weights()
        self._applied = [(name, self._write(name)) for name in names]
        self._applied_key = key

    def _stamp(self, name: str) -> tuple:
        self.indices(name)  # validates on change
        return self._validated[name]

    def restore_weights(self) -> None:
        """Put back the original values of any applied (not merged) units, exactly."""
        while self._applied:
            self._restore(*self._applied.pop())
        self._applied_key = ()

    # -- merging -------------------------------------------------------------------------------
    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        """Zero (soft adapters: scale) the pruned weights (and bias entries of pruned neurons) in place.

        The original values are kept so that :meth:`unmerge` restores them bit for bit.
        ``safe_merge`` is accepted for PEFT compatibility; zeroing cannot create NaNs.
        """
        if self.quantized:
            raise ValueError(
                f"{self.module_name} is quantized: merging masks would write packed codes; keep the adapter "
                f"unmerged (its masks are exact), or {geometry.QUANTIZED_HINT}."
            )
        adapter_names = check_adapters_to_merge(self, adapter_names)
        self.restore_weights()
        for name in adapter_names:
            if name in self.pruning_indices:
                self._originals[name] = self._write(name)
                self.merged_adapters.append(name)

    def unmerge(self) -> None:
        """Restore the exact original values, undoing merges in reverse order."""
        if not self.merged:
            warnings.warn("Already unmerged. Nothing to do.", stacklevel=2)
            return
        self.restore_weights()
        while self.merged_adapters:
            name = self.merged_adapters.pop()
            self._restore(name, self._originals.pop(name))

    def unload_and_optionally_merge_module(
        self, merge: bool, safe_merge: bool, adapter_names: list[str] | None
    ) -> torch.nn.Module:
        """PEFT's ``unload``/``merge_and_unload`` hook: restore applied units, merge if asked, and
        hand back the base layer."""
        self.restore_weights()
        if merge:
            self.merge(safe_merge=safe_merge, adapter_names=adapter_names)
        return self.base_layer
