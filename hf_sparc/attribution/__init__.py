"""Attribution: LRP and baseline relevance of weights, neurons, heads and tokens."""

from hf_sparc.attribution.engine import attribute
from hf_sparc.attribution.lrp import lrp_rules
from hf_sparc.attribution.objectives import OBJECTIVES, Objective
from hf_sparc.attribution.signals import METHODS, AttributionMethod, Signal, get_method

__all__ = [
    "METHODS",
    "OBJECTIVES",
    "AttributionMethod",
    "Objective",
    "Signal",
    "attribute",
    "get_method",
    "lrp_rules",
]
