"""hf_sparc: attribution-guided pruning (LRP) for Hugging Face causal LMs.

Compute LRP relevance of weights, neurons and heads on reference texts, contrast undesired
with general behaviour, and ship the cut as a PEFT-style mask adapter.
"""

from hf_sparc.architectures import supported_model_types
from hf_sparc.attribution import attribute, lrp_rules
from hf_sparc.relevance import Relevance, RelevanceInfo

__version__ = "0.1.0"

__all__ = [
    "Relevance",
    "RelevanceInfo",
    "__version__",
    "attribute",
    "lrp_rules",
    "supported_model_types",
]
