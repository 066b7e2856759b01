"""Attribution: LRP and baseline relevance of weights, neurons, heads and tokens."""

from hf_sparc.attribution.engine import OBJECTIVES, attribute
from hf_sparc.attribution.methods import METHODS, AttributionMethod
from hf_sparc.attribution.rules import lrp_rules

__all__ = ["METHODS", "OBJECTIVES", "AttributionMethod", "attribute", "lrp_rules"]
