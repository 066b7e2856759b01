"""LRP in Gradient×Input form: AttnLRP's rule functions (as in lxt) placed on one model instance."""

from hf_sparc.attribution.lrp.placement import LRP_METHODS, PLACEMENTS, Placement, lrp_rules

__all__ = ["LRP_METHODS", "PLACEMENTS", "Placement", "lrp_rules"]
