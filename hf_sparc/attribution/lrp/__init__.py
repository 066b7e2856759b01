"""LRP in Gradient×Input form: lxt's rule functions placed on one model instance."""

from hf_sparc.attribution.lrp.rules import LRP_METHODS, lrp_rules

__all__ = ["LRP_METHODS", "lrp_rules"]
