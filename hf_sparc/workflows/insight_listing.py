"""How pruned units are listed: the unit/context records, markdown, JSON and the per-layer chart.

The records are filled by :func:`hf_sparc.workflows.insight.unit_contexts`; everything here only
presents them (and the counts of a :class:`~hf_sparc.Masks`), so it also serves weight masks.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hf_sparc.masks import Masks
from hf_sparc.reports.writer import new_figure, write_files

__all__ = [
    "Context",
    "UnitContexts",
    "layer_of",
    "layers_figure",
    "plot_layers",
    "render_markdown",
    "to_json",
]


@dataclass(frozen=True)
class Context:
    """One token position where a unit fired.

    Attributes:
        text_index: Index of the text in the ``texts`` given to :func:`unit_contexts`.
        position: Token position inside that text (after tokenization and truncation).
        token: The token at ``position``, decoded.
        before: Up to ``context_tokens`` tokens preceding it, decoded (causal models: only these
            can influence the activation).
        activation: Neuron: the signed output value; head: the norm of the head's output.
    """

    text_index: int
    position: int
    token: str
    before: str
    activation: float


@dataclass(frozen=True)
class UnitContexts:
    """The top contexts of one pruned unit.

    Attributes:
        module: Masks key of the unit's module (attention module for heads).
        unit: Neuron or head index within the module.
        level: ``"neuron"`` or ``"head"``.
        layer: Decoder layer index parsed from ``module`` (``None`` if it has no number).
        mean_activation: Mean ``|activation|`` over all scored tokens (for scale).
        contexts: Highest ``|activation|`` first.
    """

    module: str
    unit: int
    level: str
    layer: int | None
    mean_activation: float
    contexts: tuple[Context, ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def layer_of(module_name: str) -> int | None:
    """Decoder-layer index in a module name (the first ``.<number>`` component), else ``None``."""
    match = re.search(r"\.(\d+)(?:\.|$)", module_name)
    return int(match.group(1)) if match else None


def _one_line(text: str) -> str:
    """Text safe inside one markdown line: newlines shown as ⏎, markup characters escaped."""
    text = text.replace("\r", "").replace("\n", "⏎")
    return re.sub(r"([\\`*_|<>\[\]])", r"\\\1", text)


def _grouped(masks: Masks) -> dict[int | None, dict[str, int]]:
    """Per layer, per module kind (name after the layer number): pruned counts."""
    groups: dict[int | None, dict[str, int]] = {}
    for name, idx in masks.items():
        layer = layer_of(name)
        kind = name.split(f".{layer}.", 1)[-1] if layer is not None else name
        groups.setdefault(layer, {}).setdefault(kind, 0)
        groups[layer][kind] += idx.numel()
    return groups


def render_markdown(units: Sequence[UnitContexts], masks: Masks | None = None) -> str:
    """Markdown listing: the per-module counts of ``masks`` (if given), then per layer and unit
    the top contexts, the top token in bold after its preceding context."""
    lines: list[str] = []
    if masks is not None:
        lines += [
            f"## Pruned {masks.level}s: {masks.total()} of {masks.size()}",
            "",
            masks.summary().to_markdown(),
            "",
        ]
    current: tuple[int | None, str] | None = None
    for unit in units:
        if (unit.layer, unit.module) != current:
            current = (unit.layer, unit.module)
            lines += ["", f"### `{unit.module}`", ""]
        shown = "; ".join(
            # bold markup must hug the text: a token's leading space goes outside it
            f"…{_one_line(c.before)}{' ' if c.token[:1].isspace() else ''}**{_one_line(c.token.strip())}** "
            f"({c.activation:+.3g})"
            for c in unit.contexts
        )
        lines.append(f"- {unit.level} {unit.unit} (mean |a| {unit.mean_activation:.3g}): {shown or '—'}")
    return "\n".join(lines).strip() + "\n"


def to_json(units: Sequence[UnitContexts], masks: Masks | None = None) -> dict[str, Any]:
    """JSON-serialisable form: ``{"level", "pruned", "size", "modules": {name: [ids]}, "units": [...]}``
    (the first four only when ``masks`` is given)."""
    data: dict[str, Any] = {}
    if masks is not None:
        data = {
            "level": masks.level,
            "pruned": masks.total(),
            "size": masks.size(),
            "modules": {name: idx.tolist() for name, idx in masks.items()},
        }
    data["units"] = [unit.to_dict() for unit in units]
    return data


def layers_figure(masks: Masks, title: str | None = None):
    """Bar chart of the pruned units per decoder layer, stacked by module kind: a
    :class:`matplotlib.figure.Figure` (no pyplot state)."""
    groups = _grouped(masks)
    numbered = [layer for layer in groups if layer is not None]
    layers = list(range(max(numbered) + 1)) if numbered else []
    kinds = sorted({kind for per_layer in groups.values() for kind in per_layer})
    figure, ax = new_figure(max(6.0, 0.3 * len(layers) + 2), 3.6)
    bottom = [0] * len(layers)
    for kind in kinds:
        heights = [groups.get(layer, {}).get(kind, 0) for layer in layers]
        ax.bar(layers, heights, bottom=bottom, label=kind)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    ax.set_xlabel("decoder layer")
    ax.set_ylabel(f"pruned {masks.level}s")
    if layers:
        ax.set_xticks(layers[:: max(1, math.ceil(len(layers) / 30))])
    if kinds:
        ax.legend(fontsize="small")
    default = f"{masks.total()} of {masks.size()} {masks.level}s pruned ({masks.method or 'masks'})"
    ax.set_title(title or default)
    return figure


def plot_layers(masks: Masks, path: str | os.PathLike, title: str | None = None) -> None:
    """Write :func:`layers_figure` to ``path`` (PNG)."""
    path = Path(path)
    write_files(path.parent, {path.name: layers_figure(masks, title)})
