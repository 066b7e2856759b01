"""Attribution: LRP and baseline relevance of weights, neurons, heads and tokens."""

from hf_sparc.attribution.engine import OBJECTIVES, attribute
from hf_sparc.attribution.lrp import lrp_rules
from hf_sparc.attribution.signals import METHODS, AttributionMethod

__all__ = ["METHODS", "OBJECTIVES", "AttributionMethod", "attribute", "lrp_rules"]
