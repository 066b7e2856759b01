"""`SparcAdapterConfig`: the PEFT config of a pruning-mask adapter (``adapter_config.json``)."""

from __future__ import annotations

import enum
import hashlib
import json
import os
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from peft.config import PeftConfig
from peft.utils import CONFIG_NAME
from safetensors import safe_open

from hf_sparc.tuner.compact import compact_fields, expand_fields, target_regex

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


def indices_digest(
    level: str, n_components: int, indices: torch.Tensor, scales: torch.Tensor | None = None
) -> str:
    """Short hash of one module's pruned indices (and, for dampened units, their scales) together
    with what they index.

    Stored per module in the config and checked after the indices are loaded, so a flipped byte
    in ``adapter_model.safetensors`` (or an edited level / head count in the config) that still
    gives valid-looking indices is refused instead of pruning the wrong units.
    """
    digest = hashlib.sha256(f"{level}:{n_components}:".encode())
    digest.update(indices.detach().to(device="cpu", dtype=torch.int64).contiguous().numpy().tobytes())
    if scales is not None:
        digest.update(b"scales:")
        digest.update(scales.detach().to(device="cpu", dtype=torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _is_int(value: Any, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _check_types(config: SparcAdapterConfig) -> None:
    """Refuse an adapter_config.json whose SPARC fields have the wrong JSON types, naming the field.

    Without this a wrong type surfaces later as an AttributeError deep inside PEFT, or worse, is
    accepted (a string count compares unequal to every real count).
    """

    def name_map(field_name: str, ok: Any, expected: str) -> None:
        value = getattr(config, field_name)
        if not isinstance(value, dict) or not all(isinstance(k, str) and ok(v) for k, v in value.items()):
            raise ValueError(f"SPARC adapter config: {field_name} must map module names to {expected}.")

    if config.level is None:
        raise ValueError("SPARC adapter config has no level (weight, neuron or head).")
    name_map("module_counts", lambda v: _is_int(v, 0), "non-negative ints")
    name_map(
        "module_shapes",
        lambda v: isinstance(v, list) and len(v) == 2 and all(_is_int(d, 1) for d in v),
        "[rows, columns] weight shapes",
    )
    name_map("mask_modules", lambda v: isinstance(v, str), "module names")
    name_map("module_digests", lambda v: isinstance(v, str), "digest strings")
    name_map(
        "modules", lambda v: isinstance(v, dict) and all(_is_int(c, 0) for c in v.values()), "{layer: count}"
    )
    name_map(
        "shapes", lambda v: isinstance(v, list) and len(v) == 2 and all(_is_int(d, 1) for d in v), "shapes"
    )
    name_map("mask_templates", lambda v: isinstance(v, str), "module name templates")
    name_map("digests", lambda v: isinstance(v, str), "space-separated digests")
    for field_name, expected in (
        ("level", str),
        ("fingerprint", str),
        ("model_type", str),
        ("provenance", dict),
        ("soft", bool),
    ):
        if not isinstance(getattr(config, field_name), expected):
            raise ValueError(f"SPARC adapter config: {field_name} must be a {expected.__name__}.")
    if config.num_layers is not None and not _is_int(config.num_layers, 1):
        raise ValueError(
            f"SPARC adapter config: num_layers must be a positive int, got {config.num_layers!r}."
        )
    if config.num_heads is not None and not _is_int(config.num_heads, 1):
        raise ValueError(f"SPARC adapter config: num_heads must be a positive int, got {config.num_heads!r}.")
    targets = config.target_modules
    if not (
        targets is None
        or isinstance(targets, str)
        or (isinstance(targets, list | set) and all(isinstance(t, str) for t in targets))
    ):
        raise ValueError("SPARC adapter config: target_modules must be a regex or a list of module names.")


def _check_peft_type(config_file: str) -> None:
    """Refuse a local adapter_config.json that is not a SPARC adapter's, before PEFT dispatches on it."""
    if not os.path.isfile(config_file):
        return  # PEFT reports the missing file itself
    try:
        with open(config_file, encoding="utf-8") as handle:
            values = json.load(handle)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{config_file} is not valid JSON: {error}") from error
    if not isinstance(values, dict):
        raise ValueError(f"{config_file} must hold a JSON object.")
    peft_type = values.get("peft_type")
    if peft_type != SparcPeftType.SPARC.value:
        raise ValueError(f"{config_file} describes a {peft_type!r} adapter, not a SPARC adapter.")


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
        model_type: ``config.model_type`` of the base model (checked on load when set).
        num_layers: Decoder layers of the base model (checked on load when set: an adapter for a
            2-layer model must not silently prune the first 2 layers of a 3-layer one).
        num_heads: Attention heads per layer (head level: head width = o_proj input / num_heads).
        mask_modules: Wrapped module name -> name the masks were keyed by (the attention module
            for head level; the module itself otherwise).
        module_digests: Wrapped module name -> :func:`indices_digest` of its pruned indices,
            checked on load (absent in adapters written before it existed: not checked then).
        modules, shapes, mask_templates, digests: The same per-module fields as written to
            ``adapter_config.json`` (grouped by layer, :mod:`hf_sparc.tuner.compact`); expanded
            into the fields above when read, empty in memory.
        provenance: How the masks were chosen: ``method``, ``rule``, ``model_name``,
            ``n_samples``, ``settings``.
        soft: Neuron and head level: the adapter also stores one scale per index
            (``pruning_scales``): the selected units are multiplied by it (dampened) instead of
            zeroed. Absent (``False``) in binary adapters and in adapters written before it existed.
    """

    # no default: a config file without a level must not silently become a neuron adapter
    level: str | None = field(default=None, metadata={"help": "weight, neuron or head"})
    target_modules: str | list[str] | None = field(default=None, metadata={"help": "wrapped modules"})
    module_counts: dict[str, int] = field(default_factory=dict)
    module_shapes: dict[str, list[int]] = field(default_factory=dict)
    fingerprint: str = ""
    model_type: str = ""
    num_layers: int | None = None
    num_heads: int | None = None
    mask_modules: dict[str, str] = field(default_factory=dict)
    module_digests: dict[str, str] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    soft: bool = False
    # the compact file layout (hf_sparc.tuner.compact): expanded into the per-module fields above on
    # load, written from them by to_dict(); empty in memory
    modules: dict[str, dict[str, int]] = field(default_factory=dict)
    shapes: dict[str, list[int]] = field(default_factory=dict)
    mask_templates: dict[str, str] = field(default_factory=dict)
    digests: dict[str, str] = field(default_factory=dict)

    def __new__(cls, *args: Any, **kwargs: Any) -> SparcAdapterConfig:
        # PEFT drops unknown config keys with a warning (forward compatibility), but a key from a
        # newer or tampered adapter may change what the indices mean, so a SPARC config refuses
        # them. Checked in __new__ because PEFT builds configs as ``cls(**json)`` on every load path.
        unknown = sorted(set(kwargs) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(
                f"SPARC adapter config has unknown field(s) {unknown} (written by a newer hf_sparc, or "
                "edited?); refusing to guess what they mean."
            )
        return super().__new__(cls)

    def __post_init__(self) -> None:
        _check_types(self)
        if not self.modules and (self.shapes or self.mask_templates or self.digests):
            raise ValueError("SPARC adapter config has shapes or digests without modules.")
        if self.modules:
            if self.module_counts or self.module_shapes or self.mask_modules or self.module_digests:
                raise ValueError("SPARC adapter config mixes the compact and the per-module layout.")
            if self.target_modules is None:
                self.target_modules = target_regex(self.modules)
            expanded = expand_fields(self.modules, self.shapes, self.mask_templates, self.digests)
            for name, value in expanded.items():
                setattr(self, name, value)
            self.modules, self.shapes, self.mask_templates, self.digests = {}, {}, {}, {}
        super().__post_init__()
        self.peft_type = SparcPeftType.SPARC
        if self.level not in ("weight", "neuron", "head"):
            raise ValueError(f"Unknown SPARC adapter level {self.level!r}; expected weight, neuron or head.")
        for name in ("mask_modules", "module_digests"):
            if not set(getattr(self, name)) <= set(self.module_shapes):
                raise ValueError(f"SPARC adapter config: {name} names modules missing from module_shapes.")
        if set(self.module_counts) != set(self.module_shapes):
            raise ValueError("SPARC adapter config: module_counts and module_shapes cover different modules.")
        if self.soft and self.level == "weight":
            raise ValueError("A weight-level SPARC adapter cannot be soft (weights are cut, not dampened).")
        if self.level == "head" and not self.num_heads:
            raise ValueError("A head-level SPARC adapter config needs num_heads.")
        if self.fingerprint and self.fingerprint != shape_fingerprint(self.module_shapes):
            raise ValueError(
                "SPARC adapter config is inconsistent: its fingerprint does not match its module_shapes "
                "(edited or corrupted adapter_config.json)."
            )

    def to_dict(self) -> dict[str, Any]:
        """The config as written to ``adapter_config.json``: in the compact layout (one group per
        module name template, one digest; :mod:`hf_sparc.tuner.compact`)."""
        return compact_fields(super().to_dict())

    def save_pretrained(self, save_directory: str, **kwargs: Any) -> None:
        """Write ``adapter_config.json`` as PEFT does, in the compact layout and without indentation
        (a third of the file's bytes over 30 modules)."""
        super().save_pretrained(save_directory, **kwargs)
        path = os.path.join(save_directory, CONFIG_NAME)
        with open(path, encoding="utf-8") as handle:
            values = json.load(handle)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(values, sort_keys=True, separators=(",", ":")) + "\n")

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str, subfolder: str | None = None, **kwargs: Any):
        """Load the config, refusing adapters that lack ``adapter_model.safetensors``.

        PEFT falls back to a pickled ``adapter_model.bin`` when the safetensors file is missing;
        refusing here, before PEFT looks for weights, keeps pickle off hf_sparc's load path.
        """
        path = os.path.join(pretrained_model_name_or_path, subfolder or "")
        if os.path.isdir(path):
            _check_peft_type(os.path.join(path, CONFIG_NAME))
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
