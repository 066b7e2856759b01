"""`Masks`: which components of which modules to prune, with where that choice came from."""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from hf_sparc._files import load_tensors, save_tensors

MASK_LEVELS = ("weight", "neuron", "head")
# levels whose units can be dampened: a scale on a neuron or head is one multiply of its output
SOFT_LEVELS = ("neuron", "head")
_MASKS_KEY = "hf_sparc.masks"
# tensor-name prefix of the scales in a masks file (module names never contain a colon)
_SCALES_PREFIX = "scales:"


def check_indices(indices: Any, size: int, where: str) -> torch.Tensor:
    """Validate pruning indices for one module and return them as a 1-D int64 CPU-or-device tensor.

    Indices must be integers, strictly increasing (sorted, no duplicates) and within ``[0, size)``.
    Anything else raises ``ValueError`` naming ``where``: a wrong index is never ignored, because it
    would silently prune the wrong unit.
    """
    if not isinstance(indices, torch.Tensor):
        raise ValueError(f"{where}: indices must be a tensor, got {type(indices).__name__}.")
    if indices.dtype.is_floating_point or indices.dtype.is_complex or indices.dtype == torch.bool:
        raise ValueError(f"{where}: indices must be integers, got dtype {indices.dtype}.")
    if indices.dim() != 1:
        raise ValueError(f"{where}: indices must be 1-D, got shape {tuple(indices.shape)}.")
    indices = indices.to(torch.int64)
    if indices.numel() == 0:
        return indices
    low, high = int(indices.min()), int(indices.max())
    if low < 0 or high >= size:
        bad = low if low < 0 else high
        raise ValueError(f"{where}: index {bad} is out of range for {size} components.")
    if indices.numel() > 1:
        steps = indices[1:] - indices[:-1]
        if bool((steps <= 0).any()):
            position = int(torch.nonzero(steps <= 0)[0])
            kind = "duplicated" if int(steps[position]) == 0 else "unsorted"
            raise ValueError(
                f"{where}: indices must be sorted and unique; index {int(indices[position + 1])} at "
                f"position {position + 1} is {kind}."
            )
    return indices


def _check_shape(shape: Any, name: str, level: str) -> tuple[int, ...]:
    """A module's component shape as a tuple of positive ints (``ValueError`` naming it otherwise):
    2-D (the weight) at weight level, 1-D (neurons or heads) otherwise."""
    dims = 2 if level == "weight" else 1
    if (
        not isinstance(shape, list | tuple)
        or len(shape) != dims
        or not all(isinstance(d, numbers.Integral) and not isinstance(d, bool) and d > 0 for d in shape)
    ):
        raise ValueError(f"Masks shape of {name!r} must be {dims} positive int(s), got {shape!r}.")
    return tuple(int(d) for d in shape)


def check_scales(scales: Any, n_indices: int, where: str) -> torch.Tensor:
    """Validate the scales kept by ``n_indices`` dampened units and return them as float32.

    A scale is what a unit's output is multiplied by: finite and in ``[0, 1)`` (1 would not touch
    the unit, so it must not be counted as dampened). Anything else raises ``ValueError`` naming
    ``where``.
    """
    if not isinstance(scales, torch.Tensor) or not scales.dtype.is_floating_point:
        raise ValueError(f"{where}: scales must be a floating-point tensor, got {scales!r:.80}.")
    if scales.shape != (n_indices,):
        raise ValueError(f"{where}: {tuple(scales.shape)} scales for {n_indices} indices.")
    scales = scales.detach().float()
    bad = ~(torch.isfinite(scales) & (scales >= 0) & (scales < 1))
    if bool(bad.any()):
        raise ValueError(f"{where}: scale {float(scales[bad][0])!r} is outside [0, 1).")
    return scales


@dataclass(frozen=True)
class ModuleSummary:
    """One row of :meth:`Masks.summary`: how much of one module is pruned."""

    module: str
    pruned: int
    total: int

    @property
    def fraction(self) -> float:
        return self.pruned / self.total if self.total else 0.0


@dataclass(frozen=True)
class MaskSummary:
    """Per-module pruning counts of a :class:`Masks`; ``str()`` gives a plain table.

    Attributes:
        level: ``"weight"``, ``"neuron"`` or ``"head"``.
        rows: One :class:`ModuleSummary` per module in scope, in module order.
    """

    level: str
    rows: tuple[ModuleSummary, ...]

    @property
    def pruned(self) -> int:
        return sum(row.pruned for row in self.rows)

    @property
    def total(self) -> int:
        return sum(row.total for row in self.rows)

    @property
    def fraction(self) -> float:
        return self.pruned / self.total if self.total else 0.0

    def _table(self) -> list[tuple[str, str, str, str]]:
        body = [(r.module, str(r.pruned), str(r.total), f"{100 * r.fraction:.3f}%") for r in self.rows]
        return [*body, ("total", str(self.pruned), str(self.total), f"{100 * self.fraction:.3f}%")]

    def to_markdown(self) -> str:
        """A markdown table (used in model cards)."""
        lines = [f"| module | pruned {self.level}s | of | fraction |", "| --- | ---: | ---: | ---: |"]
        *body, (_, pruned, total, fraction) = self._table()
        lines += [f"| `{m}` | {p} | {t} | {f} |" for m, p, t, f in body]
        lines.append(f"| **total** | {pruned} | {total} | {fraction} |")
        return "\n".join(lines)

    def __str__(self) -> str:
        rows = [("module", f"pruned {self.level}s", "of", "fraction"), *self._table()]
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        lines = []
        for row in rows:
            cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
            lines.append("  ".join(cells))
        return "\n".join(lines)


@dataclass(frozen=True)
class Masks(Mapping[str, torch.Tensor]):
    """Components to prune, per module.

    A ``Mapping`` from module name to the sorted, unique ``int64`` indices of the pruned
    components of that module; modules with nothing pruned are not keys (but are in ``shapes``).
    What an index means depends on ``level``:

    - ``"neuron"``: an output feature of the module (a row of an ``nn.Linear`` weight, a column of
      a GPT-2 ``Conv1D`` weight, plus its bias entry);
    - ``"head"``: a head id, keyed by the attention module (e.g. ``model.layers.0.self_attn``);
    - ``"weight"``: a flat position in ``module.weight.flatten()``.

    ``len(masks)`` is the number of modules with something pruned; :meth:`total` is the number of
    pruned components and :meth:`size` the number of components in scope.

    Attributes:
        level: ``"weight"``, ``"neuron"`` or ``"head"``.
        indices: Module name -> pruned indices (sorted, unique, int64).
        shapes: Module name -> shape of the scored components (weight shape, ``(n_neurons,)`` or
            ``(n_heads,)``) for every module that was in scope, pruned or not.
        method: Attribution method of the relevance the selection was made from.
        rule: The selection rule, e.g. ``"select(keep='highest', scope='global', count=100)"``.
        model_name: Name of the attributed model.
        n_samples: Reference samples the relevance was averaged over.
        settings: Attribution settings (objective, reference data, ...), kept for the model card.
        scales: Neuron and head level only: module name -> the factor each selected unit's output
            is multiplied by (float32, one per index, in ``[0, 1)``), i.e. the units are
            *dampened* rather than cut. Modules without an entry are cut (scale 0): binary masks,
            the default, have no scales at all.
    """

    level: str
    indices: Mapping[str, torch.Tensor]
    shapes: Mapping[str, tuple[int, ...]]
    method: str = ""
    rule: str = ""
    model_name: str = ""
    n_samples: int = 0
    settings: Mapping[str, Any] = field(default_factory=dict)
    scales: Mapping[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.level not in MASK_LEVELS:
            raise ValueError(f"Unknown mask level {self.level!r}; expected one of {MASK_LEVELS}.")
        if not isinstance(self.indices, Mapping) or not isinstance(self.shapes, Mapping):
            raise ValueError("Masks need `indices` and `shapes` as mappings from module name.")
        for name, expected in (("method", str), ("rule", str), ("model_name", str), ("settings", Mapping)):
            if not isinstance(getattr(self, name), expected):
                raise ValueError(f"Masks.{name} must be a {expected.__name__}, got {getattr(self, name)!r}.")
        if isinstance(self.n_samples, bool) or not isinstance(self.n_samples, int) or self.n_samples < 0:
            raise ValueError(f"Masks.n_samples must be a non-negative int, got {self.n_samples!r}.")
        shapes = {name: _check_shape(shape, name, self.level) for name, shape in self.shapes.items()}
        checked = {}
        for name, idx in self.indices.items():
            if name not in shapes:
                raise ValueError(f"Masks for module {name!r} have no entry in `shapes`.")
            checked[name] = check_indices(idx, math.prod(shapes[name]), f"Masks[{name!r}]").cpu()
        # frozen dataclass: normalise through object.__setattr__ once, at construction
        object.__setattr__(self, "shapes", shapes)
        object.__setattr__(self, "indices", {n: t for n, t in checked.items() if t.numel()})
        object.__setattr__(self, "settings", dict(self.settings))
        object.__setattr__(self, "scales", self._checked_scales())

    def _checked_scales(self) -> dict[str, torch.Tensor]:
        if not isinstance(self.scales, Mapping):
            raise ValueError("Masks.scales must map module names to tensors.")
        if self.scales and self.level not in SOFT_LEVELS:
            raise ValueError(f"{self.level}-level masks cannot carry scales; only {SOFT_LEVELS} can.")
        scales = {}
        for name, values in self.scales.items():
            if name not in self.indices:
                raise ValueError(f"Masks.scales names module {name!r}, which has no selected units.")
            values = check_scales(values, self.indices[name].numel(), f"Masks.scales[{name!r}]")
            # all-zero scales are a cut: stored without scales, so equal masks compare equal
            if bool(values.any()):
                scales[name] = values
        return scales

    # -- Mapping -----------------------------------------------------------------------------
    def __getitem__(self, name: str) -> torch.Tensor:
        return self.indices[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)

    # -- dampening ---------------------------------------------------------------------------
    @property
    def soft(self) -> bool:
        """Whether some units are dampened (scale > 0) rather than cut."""
        return bool(self.scales)

    def scale(self, name: str) -> torch.Tensor:
        """The scales of module ``name``'s selected units (zeros where they are cut)."""
        if name in self.scales:
            return self.scales[name]
        return torch.zeros(self.indices[name].numel())

    def dampened(self, scale: float) -> Masks:
        """The same units, each multiplied by ``scale`` in ``[0, 1)`` (0: cut) instead of cut."""
        if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not 0 <= scale < 1:
            raise ValueError(f"dampen scale must be a number in [0, 1), got {scale!r}.")
        scales = {name: torch.full((idx.numel(),), float(scale)) for name, idx in self.indices.items()}
        return replace(self, rule=f"{self.rule}, dampen={scale}" if scale else self.rule, scales=scales)

    # -- counts ------------------------------------------------------------------------------
    def total(self) -> int:
        """Number of pruned components over all modules."""
        return sum(t.numel() for t in self.indices.values())

    def size(self) -> int:
        """Number of components in scope (pruned or not) over all modules."""
        return sum(math.prod(shape) for shape in self.shapes.values())

    def summary(self) -> MaskSummary:
        """Pruned count, total count and fraction per module in scope (``str()`` it for a table)."""
        rows = tuple(
            ModuleSummary(name, self.indices[name].numel() if name in self.indices else 0, math.prod(shape))
            for name, shape in self.shapes.items()
        )
        return MaskSummary(self.level, rows)

    def union(self, other: Masks) -> Masks:
        """Masks pruning everything either ``self`` or ``other`` prunes (same level and shapes)."""
        if not isinstance(other, Masks):
            raise TypeError(f"Cannot unite Masks with {type(other).__name__}.")
        if other.level != self.level:
            raise ValueError(f"Cannot unite {self.level}-level with {other.level}-level masks.")
        for name in self.shapes.keys() & other.shapes.keys():
            if self.shapes[name] != other.shapes[name]:
                raise ValueError(
                    f"Shape mismatch for {name}: {self.shapes[name]} vs {other.shapes[name]}; "
                    "were these masks selected on different models?"
                )
        names = [*self.shapes, *(n for n in other.shapes if n not in self.shapes)]
        indices, scales = {}, {}
        for name in names:
            parts = [m for m in (self, other) if name in m.indices]
            if not parts:
                continue
            indices[name], where = torch.unique(
                torch.cat([m.indices[name] for m in parts]), return_inverse=True
            )
            if any(name in m.scales for m in parts):
                # a unit selected by both is multiplied by both scales, as with both adapters active
                factors = torch.cat([m.scale(name) for m in parts])
                scales[name] = torch.ones(indices[name].numel()).scatter_reduce_(0, where, factors, "prod")
        return Masks(
            level=self.level,
            indices=indices,
            shapes={n: self.shapes.get(n, other.shapes.get(n)) for n in names},
            method=self.method if self.method == other.method else f"{self.method} | {other.method}",
            rule=f"union({self.rule}, {other.rule})",
            model_name=self.model_name or other.model_name,
            n_samples=self.n_samples + other.n_samples,
            settings={**other.settings, **self.settings},
            scales=scales,
        )

    # -- persistence ---------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> None:
        """Write one ``.safetensors`` file: the indices, with level, shapes and provenance in its
        header. Written to a temporary file first and renamed, so it is never half-written; an
        existing file raises ``FileExistsError`` unless ``overwrite``."""
        meta = {
            "level": self.level,
            "shapes": {n: list(s) for n, s in self.shapes.items()},
            "method": self.method,
            "rule": self.rule,
            "model_name": self.model_name,
            "n_samples": self.n_samples,
            "settings": dict(self.settings),
        }
        tensors = {**self.indices, **{_SCALES_PREFIX + n: t for n, t in self.scales.items()}}
        save_tensors(path, tensors, _MASKS_KEY, meta, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Masks:
        """Read a file written by :meth:`save` (safetensors only; indices are re-validated)."""
        tensors, meta = load_tensors(path, _MASKS_KEY, "masks")
        indices = {n: t for n, t in tensors.items() if not n.startswith(_SCALES_PREFIX)}
        scales = {n[len(_SCALES_PREFIX) :]: t for n, t in tensors.items() if n.startswith(_SCALES_PREFIX)}
        unknown = sorted(set(meta) - _META_FIELDS)
        if unknown or "level" not in meta or "shapes" not in meta:
            problem = f"unknown field(s) {unknown}" if unknown else "no level or shapes"
            raise ValueError(f"{os.fspath(path)} has malformed hf_sparc masks metadata: {problem}.")
        try:
            return cls(indices=indices, scales=scales, **meta)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{os.fspath(path)} holds malformed hf_sparc masks: {error}") from error

    def __repr__(self) -> str:
        return (
            f"Masks(level={self.level!r}, modules={len(self)}, {'dampened' if self.soft else 'pruned'}="
            f"{self.total()} of {self.size()}, rule={self.rule!r})"
        )


# the metadata keys :meth:`Masks.save` writes; anything else is a foreign or tampered file
_META_FIELDS = frozenset({"level", "shapes", "method", "rule", "model_name", "n_samples", "settings"})
