"""`SparcAdapterConfig`: the PEFT config of a pruning-mask adapter (``adapter_config.json``)."""

from __future__ import annotations

import enum
import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any

from peft.config import PeftConfig
from safetensors import safe_open

ADAPTER_WEIGHTS = "adapter_model.safetensors"


class SparcPeftType(str, enum.Enum):
    """PEFT type of hf_sparc adapters.

    PEFT's own ``PeftType`` enum is closed, but PEFT and transformers only need a ``str`` enum
    member (they hash it against their mapping tables and call ``.value``), so hf_sparc brings
    its own and registers it in :mod:`hf_sparc.tuner`.
    """

    SPARC = "SPARC"


def shape_fingerprint(module_shapes: dict[str, list[int]]) -> str:
    """Short hash of the targeted modules' weight shapes, to recognise the model family at a glance."""
    canonical = json.dumps(sorted(module_shapes.items()), separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass
class SparcAdapterConfig(PeftConfig):
    """Configuration of a SPARC pruning-mask adapter.

    The adapter's only tensors are the pruned indices (``adapter_model.safetensors``); this config
    records what they index so that a mismatching base model is refused before it is modified.

    Attributes:
        level: ``"neuron"`` (output features of each target), ``"head"`` (heads at the input of
            each attention output projection) or ``"weight"`` (flat weight positions).
        target_modules: Regex matching exactly the wrapped module names (PEFT semantics).
        module_counts: Wrapped module name -> number of pruned indices stored for it.
        module_shapes: Wrapped module name -> its weight shape as stored (``nn.Linear``
            ``[out, in]``, ``Conv1D`` ``[in, out]``): the shape fingerprint checked on load.
        fingerprint: :func:`shape_fingerprint` of ``module_shapes``.
        model_type: ``config.model_type`` of the base model.
        num_heads: Attention heads per layer (head level: head width = o_proj input / num_heads).
        mask_modules: Wrapped module name -> name the masks were keyed by (the attention module
            for head level; the module itself otherwise).
        provenance: How the masks were chosen: ``method``, ``rule``, ``model_name``,
            ``n_samples``, ``settings``.
    """

    level: str = field(default="neuron", metadata={"help": "weight, neuron or head"})
    target_modules: str | list[str] | None = field(default=None, metadata={"help": "wrapped modules"})
    module_counts: dict[str, int] = field(default_factory=dict)
    module_shapes: dict[str, list[int]] = field(default_factory=dict)
    fingerprint: str = ""
    model_type: str = ""
    num_heads: int | None = None
    mask_modules: dict[str, str] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.peft_type = SparcPeftType.SPARC
        if self.level not in ("weight", "neuron", "head"):
            raise ValueError(f"Unknown SPARC adapter level {self.level!r}; expected weight, neuron or head.")
        if set(self.module_counts) != set(self.module_shapes):
            raise ValueError("SPARC adapter config: module_counts and module_shapes cover different modules.")
        if self.level == "head" and not self.num_heads:
            raise ValueError("A head-level SPARC adapter config needs num_heads.")
        if self.fingerprint and self.fingerprint != shape_fingerprint(self.module_shapes):
            raise ValueError(
                "SPARC adapter config is inconsistent: its fingerprint does not match its module_shapes "
                "(edited or corrupted adapter_config.json)."
            )

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str, subfolder: str | None = None, **kwargs: Any):
        """Load the config, refusing adapters that lack ``adapter_model.safetensors``.

        PEFT falls back to a pickled ``adapter_model.bin`` when the safetensors file is missing;
        refusing here, before PEFT looks for weights, keeps pickle off hf_sparc's load path.
        """
        path = os.path.join(pretrained_model_name_or_path, subfolder or "")
        if os.path.isdir(path):
            weights = os.path.join(path, ADAPTER_WEIGHTS)
            if not os.path.isfile(weights):
                raise FileNotFoundError(
                    f"{path} has no {ADAPTER_WEIGHTS}; hf_sparc loads SPARC adapters from safetensors only "
                    "(never a pickled adapter_model.bin)."
                )
            try:
                with safe_open(weights, framework="pt") as handle:
                    handle.keys()
            except Exception as error:  # safetensors raises its own error types for damaged files
                raise ValueError(
                    f"{weights} is not a readable safetensors file (truncated or corrupted?): {error}"
                ) from error
        else:
            from huggingface_hub import file_exists

            hub_kwargs = {k: kwargs[k] for k in ("revision", "token") if k in kwargs}
            filename = f"{subfolder}/{ADAPTER_WEIGHTS}" if subfolder else ADAPTER_WEIGHTS
            if not file_exists(pretrained_model_name_or_path, filename, **hub_kwargs):
                raise FileNotFoundError(
                    f"{pretrained_model_name_or_path} has no {filename}; hf_sparc loads SPARC adapters from "
                    "safetensors only (never a pickled adapter_model.bin)."
                )
        return super().from_pretrained(pretrained_model_name_or_path, subfolder=subfolder, **kwargs)
