"""hf_sparc: attribution-guided pruning (LRP) for Hugging Face causal LMs.

Compute LRP relevance of weights, neurons and heads on reference texts, contrast undesired
with general behaviour, and ship the cut as a PEFT-style mask adapter.
"""

from hf_sparc import data, metrics
from hf_sparc.architectures import supported_model_types
from hf_sparc.attribution import attribute, lrp_rules
from hf_sparc.attribution.expertise import expertise
from hf_sparc.behaviors import BehaviorSet, behavior_references, focus_on_words
from hf_sparc.masks import Masks, MaskSummary
from hf_sparc.relevance import Relevance, RelevanceInfo
from hf_sparc.selection import candidate_pool, select, select_aura, select_contrastive
from hf_sparc.tuner import SparcAdapterConfig
from hf_sparc.tuner.export import export_ia3, export_merged, save_adapter
from hf_sparc.tuner.hub import model_card, push_to_hub
from hf_sparc.tuner.model import apply_masks
from hf_sparc.workflows import circuits, compression, correction, insight, sweep
from hf_sparc.workflows.pruner import SparcConfig, SparcPruner

__version__ = "0.1.0"

__all__ = [
    "BehaviorSet",
    "MaskSummary",
    "Masks",
    "Relevance",
    "RelevanceInfo",
    "SparcAdapterConfig",
    "SparcConfig",
    "SparcPruner",
    "__version__",
    "apply_masks",
    "attribute",
    "behavior_references",
    "candidate_pool",
    "circuits",
    "compression",
    "correction",
    "data",
    "expertise",
    "export_ia3",
    "export_merged",
    "focus_on_words",
    "insight",
    "lrp_rules",
    "metrics",
    "model_card",
    "push_to_hub",
    "save_adapter",
    "select",
    "select_aura",
    "select_contrastive",
    "supported_model_types",
    "sweep",
]
