"""`SparcLayer`: an ``nn.Linear`` / GPT-2 ``Conv1D`` with pruning masks applied.

Unmerged, the base weights are never copied: neuron masks zero (or, soft, scale) output features
after the matmul, head masks input features before it, and sparse weight masks subtract the
pruned elements' contribution. Merging zeroes (scales) the pruned weights in place and keeps the
original values, so unmerging restores them exactly; in inference, active neuron and head masks are
written into the weights the same way so that they cost nothing per token
(:mod:`hf_sparc.tuner.in_weights`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from peft.tuners._buffer_dict import BufferDict
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from hf_sparc.architectures import geometry
from hf_sparc.masks import check_indices, check_scales
from hf_sparc.tuner.config import indices_digest
from hf_sparc.tuner.in_weights import InWeights
from hf_sparc.tuner.weight_masks import matmul, pruned_entries_csr

# Buffers start out as this value until real indices arrive, so an adapter whose indices never
# got loaded (a file missing a key) is detected instead of pruning unit 0.
_NOT_LOADED = -1


class SparcLayer(InWeights, nn.Module, BaseTunerLayer):
    """Wraps one ``nn.Linear`` or ``Conv1D`` and prunes it according to one or more adapters.

    Every adapter stores only its sorted pruned indices (``pruning_indices[adapter]``, int64),
    whose meaning is given by its level: output features (``"neuron"``), heads at the input
    (``"head"``, each ``head_dim`` wide) or flat weight positions (``"weight"``). A soft adapter
    also stores one scale per index (``pruning_scales[adapter]``, float32): those units are
    multiplied by it instead of zeroed. Several active adapters prune the union of their masks
    (a unit in two soft adapters is multiplied by both scales).
    """

    adapter_layer_names = ()
    other_param_names = (
        "pruning_indices",
        "pruning_scales",
        "pruning_level",
        "pruning_group",
        "pruning_digest",
    )

    def __init__(
        self,
        base_layer: nn.Module,
        module_name: str,
        adapter_name: str,
        level: str,
        count: int,
        group: int = 1,
        digest: str | None = None,
        soft: bool = False,
    ) -> None:
        super().__init__()
        # the weight must sit in base_layer itself: forward and merge write to base_layer.weight
        if geometry.base_layer(base_layer) is not base_layer or not geometry.is_projection(base_layer):
            hint = f"; {geometry.QUANTIZED_HINT}" if geometry.is_quantized(base_layer) else ""
            raise TypeError(
                f"SPARC adapters wrap nn.Linear or Conv1D, not {type(base_layer).__name__}{hint}."
            )
        # quantized weights are packed codes: only masks of outputs (neurons) or inputs (heads) are exact
        self.quantized = geometry.is_quantized(base_layer)
        self.base_layer = base_layer
        self.module_name = module_name
        # decided once: forward and the sparse correction branch on it for every call
        self.transposed = geometry.is_transposed(base_layer)
        self.in_features = geometry.in_features(base_layer)
        self.out_features = geometry.out_features(base_layer)
        self.pruning_indices = BufferDict(persistent=True)
        self.pruning_scales = BufferDict(persistent=True)
        self.pruning_level: dict[str, str] = {}
        self.pruning_group: dict[str, int] = {}
        # expected indices_digest per adapter (None: adapter written without one)
        self.pruning_digest: dict[str, str | None] = {}
        self._init_in_weights()
        # (tensor identity, version) of the indices last validated, per adapter
        self._validated: dict[str, tuple[int, int]] = {}
        # weight level: (key, union of pruned ids) and (key, pruned entries as a CSR matrix)
        self._union_cache: tuple[tuple, torch.Tensor] | None = None
        self._csr_cache: tuple[tuple, torch.Tensor] | None = None
        self._disable_adapters = False
        self.merged_adapters: list[str] = []
        self._active_adapter = adapter_name
        self.update_layer(adapter_name, level, count, group, digest, soft)
        self.register_load_state_dict_post_hook(_check_loaded)

    # -- adapters ----------------------------------------------------------------------------
    def update_layer(
        self,
        adapter_name: str,
        level: str,
        count: int,
        group: int = 1,
        digest: str | None = None,
        soft: bool = False,
    ) -> None:
        """Add an adapter slot of ``count`` indices (and, ``soft``, scales) filled later by
        ``load_state_dict``, and then checked against ``digest`` when one is given."""
        if level == "weight" and self.quantized:
            raise ValueError(
                f"{self.module_name} is quantized: weight-level masks would edit packed codes; "
                f"{geometry.QUANTIZED_HINT} (neuron and head masks work on quantized models)."
            )
        device = self.base_layer.weight.device
        self.pruning_indices[adapter_name] = torch.full(
            (count,), _NOT_LOADED, dtype=torch.int64, device=device
        )
        if soft:
            # NaN until loaded: check_scales refuses it, so unloaded scales never act as cuts
            self.pruning_scales[adapter_name] = torch.full((count,), float("nan"), device=device)
        self.pruning_level[adapter_name] = level
        self.pruning_group[adapter_name] = group
        self.pruning_digest[adapter_name] = digest
        self.set_adapter(self.active_adapters)

    def n_components(self, adapter_name: str) -> int:
        """How many units (neurons, heads or weights) the adapter's indices range over."""
        level = self.pruning_level[adapter_name]
        if level == "weight":
            return self.in_features * self.out_features
        if level == "head":
            return self.in_features // self.pruning_group[adapter_name]
        return self.out_features

    def indices(self, adapter_name: str) -> torch.Tensor:
        """The adapter's pruned indices, validated (once per change) before first use."""
        tensor, scales = self.pruning_indices[adapter_name], self._stored_scales(adapter_name)
        stamp = (id(tensor), tensor._version, id(scales), scales._version if scales is not None else 0)
        if self._validated.get(adapter_name) != stamp:
            self._check(adapter_name, tensor, scales)
            self._validated[adapter_name] = stamp
        return tensor

    def scales(self, adapter_name: str) -> torch.Tensor | None:
        """The adapter's per-index scales (validated with the indices); ``None`` for a cut."""
        self.indices(adapter_name)
        return self._stored_scales(adapter_name)

    def _stored_scales(self, adapter_name: str) -> torch.Tensor | None:
        # BufferDict has no .get()
        return self.pruning_scales[adapter_name] if adapter_name in self.pruning_scales else None  # noqa: SIM401

    def _check(self, adapter_name: str, tensor: torch.Tensor, scales: torch.Tensor | None) -> None:
        where = f"SPARC adapter {adapter_name!r}, module {self.module_name}"
        if tensor.numel() and bool((tensor == _NOT_LOADED).all()):
            raise ValueError(f"{where}: indices were never loaded (missing from adapter_model.safetensors?).")
        check_indices(tensor, self.n_components(adapter_name), where)
        if scales is not None:
            check_scales(scales, tensor.numel(), where)
        expected = self.pruning_digest.get(adapter_name)
        level, n_components = self.pruning_level[adapter_name], self.n_components(adapter_name)
        if expected and not indices_digest(level, n_components, tensor, scales).startswith(expected):
            raise ValueError(
                f"{where}: the pruned indices do not match the digest in adapter_config.json "
                "(corrupted or edited adapter files); refusing to prune the wrong units."
            )

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing, unexpected, errors):
        # Validate incoming indices before they are copied into the buffers, so a bad file never
        # leaves a half-written adapter behind.
        for adapter_name in self.pruning_indices:
            key = f"{prefix}pruning_indices.{adapter_name}"
            if key in state_dict:
                incoming = state_dict[key]
                where = f"SPARC adapter {adapter_name!r}, module {self.module_name}"
                expected = self.pruning_indices[adapter_name].numel()
                if incoming.dim() == 1 and incoming.numel() != expected:
                    raise ValueError(
                        f"{where}: the config announces {expected} indices, the file has {incoming.numel()}."
                    )
                check_indices(incoming, self.n_components(adapter_name), where)
                scales = state_dict.get(f"{prefix}pruning_scales.{adapter_name}")
                if adapter_name in self.pruning_scales and scales is not None:
                    check_scales(scales, incoming.numel(), where)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing, unexpected, errors)

    # -- masking -----------------------------------------------------------------------------
    def features(self, adapter_name: str) -> torch.Tensor:
        """Neuron level: output features; head level: input features of the pruned heads."""
        idx = self.indices(adapter_name)
        group = self.pruning_group[adapter_name]
        if group == 1:
            return idx
        offsets = torch.arange(group, device=idx.device)
        return (idx[:, None] * group + offsets).flatten()

    def feature_scales(self, adapter_name: str) -> torch.Tensor | None:
        """Soft adapters: the scale of each of :meth:`features` (a head's scale on each of its
        features); ``None`` for a cut."""
        scales = self.scales(adapter_name)
        if scales is None:
            return None
        return scales.repeat_interleave(self.pruning_group[adapter_name])

    def _pending(self) -> dict[str, list[str]]:
        """Active, not merged adapters, grouped by level."""
        by_level: dict[str, list[str]] = {"neuron": [], "head": [], "weight": []}
        for name in self.active_adapters:
            if name in self.pruning_indices and name not in self.merged_adapters:
                by_level[self.pruning_level[name]].append(name)
        return by_level

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self.disable_adapters:
            if self.merged:
                self.unmerge()
            self.restore_weights()
            return self.base_layer(x, *args, **kwargs)
        pending = self._pending()
        applied = self._appliable(pending)
        self._hold_in_weights(applied)
        if applied:
            pending["head"], pending["neuron"] = [], []
        for name in pending["head"]:
            x = self._mask_features(x.clone(), name)
        if pending["weight"]:
            result = self._weight_masked_forward(x, pending["weight"])
        else:
            result = self.base_layer(x, *args, **kwargs)
        for name in pending["neuron"]:
            # the fresh matmul output is ours to modify
            self._mask_features(result, name)
        return result

    def _mask_features(self, tensor: torch.Tensor, adapter_name: str) -> torch.Tensor:
        """Zero (index_fill: exact zeros even for inf inputs) or scale the adapter's features of
        ``tensor``'s last dimension, in place."""
        features, scales = self.features(adapter_name), self.feature_scales(adapter_name)
        if scales is None:
            return tensor.index_fill_(-1, features, 0)
        return tensor.index_copy_(-1, features, tensor.index_select(-1, features) * scales.to(tensor.dtype))

    def _weight_masked_forward(self, x: torch.Tensor, adapter_names: list[str]) -> torch.Tensor:
        weight, bias = self.base_layer.weight, self.base_layer.bias
        ids = self._pruned_weight_ids(adapter_names)
        tokens = x.numel() // x.shape[-1]
        if tokens * ids.numel() > weight.numel():
            # Dense mask: one masked copy of the weight costs less than per-token corrections,
            # and gives exactly the merged result.
            masked = weight.flatten().index_fill(0, ids, 0).view_as(weight)
            return matmul(x, masked, bias, self.transposed)
        # Sparse mask: subtract x @ P.T, P holding only the pruned entries (sparse CSR; float32,
        # the dtype every backend's sparse matmul supports). Equal to merged up to rounding.
        result = self.base_layer(x)
        correction = torch.sparse.mm(self._pruned_matrix(ids), x.reshape(-1, x.shape[-1]).float().T)
        return result.sub_(correction.T.reshape(result.shape).to(result.dtype))

    def _pruned_weight_ids(self, adapter_names: list[str]) -> torch.Tensor:
        """Union of the adapters' pruned flat weight ids, cached until their indices change."""
        ids = [self.indices(name) for name in adapter_names]
        key = tuple((name, self._validated[name]) for name in adapter_names)
        if self._union_cache is None or self._union_cache[0] != key:
            self._union_cache = (key, ids[0] if len(ids) == 1 else torch.unique(torch.cat(ids)))
        return self._union_cache[1]

    def _pruned_matrix(self, ids: torch.Tensor) -> torch.Tensor:
        """``[out, in]`` CSR matrix of the pruned weight entries.

        Rebuilt only when the pruned set, the weight tensor or its values (version counter; merges
        write through ``.data``, which bypasses it, so the merge state is part of the key) change.
        """
        weight = self.base_layer.weight
        key = (
            self._union_cache[0],
            weight.data_ptr(),
            weight._version,
            tuple(self.merged_adapters),
            self._applied_key,
        )
        if self._csr_cache is None or self._csr_cache[0] != key:
            matrix = pruned_entries_csr(weight.detach(), ids, self.transposed)
            self._csr_cache = (key, matrix)
        return self._csr_cache[1]

    def __repr__(self) -> str:
        return "sparc." + super().__repr__()


def _check_loaded(module: SparcLayer, incompatible_keys: Any) -> None:
    for adapter_name in module.pruning_indices:
        module.indices(adapter_name)


def sparc_layers(model: nn.Module) -> Iterator[tuple[str, SparcLayer]]:
    """``(name, layer)`` for every :class:`SparcLayer` in ``model``."""
    for name, module in model.named_modules():
        if isinstance(module, SparcLayer):
            yield name, module
