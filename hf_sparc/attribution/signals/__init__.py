"""Signals (how a component is scored) and the registry of attribution methods built on them.

* ``relevance``: activation ⊙ gradient of the explained output — LRP relevance when LRP rules
  are active (``rules``), plain Gradient×Input otherwise.
* ``relevance_l2``: the same per-token relevance, aggregated as ``√Σₜ R_t²`` instead of summed
  (``lrp-l2``, ``gradient-l2``; :mod:`.token_norms`, for compression); ``relevance_wanda``: Wanda's
  per-token norm with each token weighed by its relevance (``lrp-wanda``, ``gradient-wanda``; weight level).
* ``wanda``: ``|W| · ‖X‖₂`` per input feature (Sun et al. 2023), forward only; a neuron's score is
  the sum over the weights that produce it (structured Wanda).
* ``activation``: mean ``|activation|`` per unit, forward only.
* ``magnitude``: ``|W|`` (neuron level: L2 norm of the unit's weights), no data.
* ``random``: seeded uniform scores, no data (the control for capacity loss).

Adding a method that reuses a signal is one ``METHODS`` line; a new signal is one
:class:`~hf_sparc.attribution.signals.base.StreamedSignal` or
:class:`~hf_sparc.attribution.signals.base.WeightSignal` subclass plus that line — the collector
only calls the signal's ``attach``/``finish``/``score``.
"""

from __future__ import annotations

from dataclasses import dataclass

from hf_sparc.attribution.signals.base import Accumulator, Counts, Signal, StreamedSignal, WeightSignal
from hf_sparc.attribution.signals.forward import ActivationSignal, WandaSignal
from hf_sparc.attribution.signals.relevance import RelevanceSignal
from hf_sparc.attribution.signals.token_norms import RelevanceL2Signal, RelevanceWandaSignal
from hf_sparc.attribution.signals.weights import MagnitudeSignal, RandomSignal
from hf_sparc.relevance import LEVELS

__all__ = [
    "METHODS",
    "Accumulator",
    "ActivationSignal",
    "AttributionMethod",
    "Counts",
    "MagnitudeSignal",
    "RandomSignal",
    "RelevanceL2Signal",
    "RelevanceSignal",
    "RelevanceWandaSignal",
    "Signal",
    "StreamedSignal",
    "WandaSignal",
    "WeightSignal",
    "get_method",
]


@dataclass(frozen=True)
class AttributionMethod:
    """A named way to attribute: a signal, and the LRP rule placement active while it is read
    (a key of :data:`hf_sparc.attribution.lrp.PLACEMENTS`; ``None``: plain gradients)."""

    name: str
    signal: Signal
    rules: str | None = None
    description: str = ""

    @property
    def levels(self) -> tuple[str, ...]:
        return self.signal.levels

    @property
    def needs_data(self) -> bool:
        return self.signal.needs_data

    @property
    def needs_gradient(self) -> bool:
        return self.signal.needs_gradient


METHODS: dict[str, AttributionMethod] = {
    m.name: m
    for m in (
        AttributionMethod("lrp", RelevanceSignal(), rules="lrp", description="AttnLRP"),
        AttributionMethod("cp-lrp", RelevanceSignal(), rules="cp-lrp", description="CP-LRP (q, k detached)"),
        AttributionMethod("gradient", RelevanceSignal(), description="Gradient × Input"),
        AttributionMethod("lrp-l2", RelevanceL2Signal(), rules="lrp", description="AttnLRP, √Σₜ R² per unit"),
        AttributionMethod("gradient-l2", RelevanceL2Signal(), description="Gradient×Input, √Σₜ R² per unit"),
        AttributionMethod("lrp-wanda", RelevanceWandaSignal(), rules="lrp", description="AttnLRP, √Σₜ|R·C|"),
        AttributionMethod("gradient-wanda", RelevanceWandaSignal(), description="Gradient×Input, √Σₜ|R·C|"),
        AttributionMethod("wanda", WandaSignal(), description="|W|·‖X‖₂ (Wanda; neuron: row sum)"),
        AttributionMethod("magnitude", MagnitudeSignal(), description="|W|"),
        AttributionMethod("activation", ActivationSignal(), description="mean |activation|"),
        AttributionMethod("random", RandomSignal(), description="seeded random"),
    )
}


def get_method(name: str, level: str) -> AttributionMethod:
    """Validate ``name`` and ``level`` together; errors list what is valid."""
    if level not in LEVELS:
        raise ValueError(f"Unknown level {level!r}; expected one of {list(LEVELS)}.")
    if name not in METHODS:
        raise ValueError(f"Unknown method {name!r}; expected one of {list(METHODS)}.")
    method = METHODS[name]
    if level not in method.levels:
        raise ValueError(
            f"Method {name!r} cannot score the {level!r} level; it serves {list(method.levels)}. "
            f"Methods for {level!r}: {[m.name for m in METHODS.values() if level in m.levels]}."
        )
    return method
