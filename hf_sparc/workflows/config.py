"""`SparcConfig`: everything that decides which components a ``SparcPruner`` cuts.

Configured like a ``GenerationConfig`` and saved as ``sparc_config.json``; every field is checked
on construction, so a config read from a file someone edited fails with one message naming the field.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from hf_sparc._files import atomic_write
from hf_sparc.attribution.memory import parse_bytes
from hf_sparc.attribution.signals import get_method

CONFIG_NAME = "sparc_config.json"
_SCOPES = ("global", "layer", "row")
_DEFAULT_COUNT = 100


@dataclass
class SparcConfig:
    """Everything that decides which components a :class:`SparcPruner` cuts.

    Args:
        method: Attribution method (``"lrp"``, ``"cp-lrp"``, ``"gradient"``, ``"wanda"``,
            ``"magnitude"``, ``"activation"``, ``"random"``).
        level: ``"neuron"``, ``"head"`` or ``"weight"``.
        count: Components to prune (default 100 when ``fraction`` is not given).
        fraction: Share of the scored components to prune, in ``(0, 1)``; excludes ``count``.
        scope: ``"global"``, ``"layer"`` or ``"row"`` (weight level).
        keep: Without undesired data (compression): ``"highest"`` keeps the most relevant.
        protect_general: Contrastive selection: share of components with the largest general
            relevance that are never cut (see :func:`hf_sparc.select_contrastive`).
        target_modules, objective, absolute, max_length, batch_size, seed, text_column:
            Passed to :func:`hf_sparc.attribute`.
        undesired_max_length: Token budget of the undesired references (default ``max_length``):
            a prompt/continuation pair needs room for its prompt *and* the continuation explained.
        gradient_checkpointing: Recompute layer activations in the backward pass (less memory,
            same relevance); see :func:`hf_sparc.attribute`.
        checkpoint_dir: Make :meth:`SparcPruner.fit` resumable: each reference set saves its
            accumulators under ``checkpoint_dir/<undesired|general>`` every ``checkpoint_every``
            batches, and a restarted fit continues from them (bit-identical result).
        checkpoint_every: Batches between two saves of ``checkpoint_dir``.
        max_memory: Memory budget of each attribution (bytes or ``"8GB"``); see
            :func:`hf_sparc.attribute`.
        adapter_name: Name of the PEFT adapter that :meth:`SparcPruner.prune` adds.
    """

    method: str = "lrp"
    level: str = "neuron"
    count: int | None = None
    fraction: float | None = None
    scope: str = "global"
    keep: str = "highest"
    protect_general: float = 0.0
    target_modules: list[str] | str | None = None
    objective: str = "next_token"
    absolute: bool = False
    max_length: int = 128
    undesired_max_length: int | None = None
    batch_size: int = 8
    seed: int = 0
    text_column: str = "text"
    gradient_checkpointing: bool = False
    checkpoint_dir: str | None = None
    checkpoint_every: int = 10
    max_memory: str | None = None
    adapter_name: str = "sparc"
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        _check_field_types(self)
        if self.level == "token":
            raise ValueError(
                "level='token' scores inputs, not prunable components; use neuron, head or weight."
            )
        get_method(self.method, self.level)
        if self.max_memory is not None:
            parse_bytes(self.max_memory)
        if self.count is not None and self.fraction is not None:
            raise ValueError(
                f"Give count or fraction, not both (count={self.count}, fraction={self.fraction})."
            )
        if self.count is None and self.fraction is None:
            self.count = _DEFAULT_COUNT
        if self.count is not None and (isinstance(self.count, bool) or not isinstance(self.count, int)):
            raise ValueError(f"count must be an integer, got {self.count!r}.")
        if self.count is not None and self.count <= 0:
            raise ValueError(f"count must be positive, got {self.count}.")
        if self.fraction is not None and not 0 < self.fraction < 1:
            raise ValueError(f"fraction must be in (0, 1), got {self.fraction}.")
        if self.scope not in _SCOPES:
            raise ValueError(f"Unknown scope {self.scope!r}; expected one of {list(_SCOPES)}.")
        if self.scope == "row" and self.level != "weight":
            raise ValueError("scope='row' needs level='weight'.")
        if not 0.0 <= self.protect_general < 1.0:
            raise ValueError(f"protect_general must be in [0, 1), got {self.protect_general}.")
        if self.keep not in ("highest", "lowest"):
            raise ValueError(f"keep must be 'highest' or 'lowest', got {self.keep!r}.")
        if self.undesired_max_length is not None and self.undesired_max_length < 1:
            raise ValueError(f"undesired_max_length must be positive, got {self.undesired_max_length}.")
        for name in ("max_length", "batch_size", "checkpoint_every"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}.")
        if not isinstance(self.gradient_checkpointing, bool):
            raise ValueError(
                f"gradient_checkpointing must be True or False, got {self.gradient_checkpointing!r}."
            )
        if isinstance(self.checkpoint_dir, os.PathLike):  # stored as str: the config is saved as JSON
            self.checkpoint_dir = os.fspath(self.checkpoint_dir)
        if self.checkpoint_dir is not None and not isinstance(self.checkpoint_dir, str):
            raise ValueError(f"checkpoint_dir must be a path string or None, got {self.checkpoint_dir!r}.")

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-ready."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SparcConfig:
        """The config of ``values``; unknown fields raise ``ValueError`` (a typo must not be ignored)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Unknown SparcConfig field(s) {unknown}; known: {sorted(known)}.")
        return cls(**values)

    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        """Write ``sparc_config.json`` into ``save_directory`` (atomically)."""
        atomic_write(Path(save_directory) / CONFIG_NAME, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> SparcConfig:
        """Read ``sparc_config.json`` from ``directory``, refusing unknown or mistyped fields."""
        path = Path(directory) / CONFIG_NAME
        if not path.is_file():
            raise FileNotFoundError(f"No {CONFIG_NAME} in {directory}.")
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"{path} is not valid JSON: {error}") from error
        if not isinstance(values, dict):
            raise ValueError(f"{path} must hold a JSON object.")
        return cls.from_dict(values)


# JSON types each SparcConfig field accepts (a sparc_config.json may come from anywhere)
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "count": (int, type(None)),
    "fraction": (float, int, type(None)),
    "protect_general": (float, int),
    "target_modules": (str, list, type(None)),
    "absolute": (bool,),
    "max_length": (int,),
    "undesired_max_length": (int, type(None)),
    "batch_size": (int,),
    "seed": (int,),
    "extra": (dict,),
    **dict.fromkeys(("method", "level", "scope", "keep", "objective", "text_column", "adapter_name"), (str,)),
}


def _check_field_types(config: SparcConfig) -> None:
    """Refuse a field of the wrong type with one ``ValueError`` naming it (``True`` is not a count)."""
    for name, types in _FIELD_TYPES.items():
        value = getattr(config, name)
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            expected = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise ValueError(f"SparcConfig.{name} must be {expected}, got {value!r}.")
    if isinstance(config.target_modules, list) and not all(isinstance(t, str) for t in config.target_modules):
        raise ValueError(f"SparcConfig.target_modules must list strings, got {config.target_modules!r}.")
