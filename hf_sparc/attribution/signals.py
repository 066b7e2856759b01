"""Registry of attribution methods: which signal each computes and which levels it serves.

A *signal* is how a component is scored (see :mod:`hf_sparc.attribution.collector`):

* ``relevance``: activation ⊙ gradient of the explained output — LRP relevance when LRP rules
  are active (``rules``), plain Gradient×Input otherwise.
* ``wanda``: ``|W| · ‖X‖₂`` per input feature (Sun et al. 2023), forward only; a neuron's score is
  the sum over the weights that produce it (structured Wanda).
* ``activation``: mean ``|activation|`` per unit, forward only.
* ``magnitude``: ``|W|`` (neuron level: L2 norm of the unit's weights), no data.
* ``random``: seeded uniform scores, no data (the control for capacity loss).

Adding a method that reuses a signal is one registry line; a new signal is one collector.
"""

from __future__ import annotations

from dataclasses import dataclass

from hf_sparc.relevance import LEVELS


@dataclass(frozen=True)
class AttributionMethod:
    name: str
    signal: str
    levels: tuple[str, ...]
    rules: str | None = None
    description: str = ""

    @property
    def needs_data(self) -> bool:
        return self.signal not in ("magnitude", "random")

    @property
    def needs_gradient(self) -> bool:
        return self.signal == "relevance"


METHODS: dict[str, AttributionMethod] = {
    m.name: m
    for m in (
        AttributionMethod("lrp", "relevance", LEVELS, rules="lrp", description="AttnLRP"),
        AttributionMethod(
            "cp-lrp", "relevance", LEVELS, rules="cp-lrp", description="CP-LRP (q, k detached)"
        ),
        AttributionMethod("gradient", "relevance", LEVELS, description="Gradient × Input"),
        AttributionMethod(
            "wanda", "wanda", ("weight", "neuron"), description="|W|·‖X‖₂ (Wanda; neuron: row sum)"
        ),
        AttributionMethod("magnitude", "magnitude", ("weight", "neuron"), description="|W|"),
        AttributionMethod("activation", "activation", ("neuron", "head"), description="mean |activation|"),
        AttributionMethod("random", "random", ("weight", "neuron", "head"), description="seeded random"),
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
