"""Metrics for pruned models: perplexity, per-text log-likelihood, repetition (RUR) and toxicity of
greedy continuations.

Plain functions take an in-memory model (or ``PeftModel``) and tokenizer. The same metrics are
``evaluate`` modules that load offline from their file (no Hub access)::

    import evaluate
    from hf_sparc.metrics import metric_path

    toxicity = evaluate.load(metric_path("toxicity"))
    toxicity.compute(prompts=prompts, model=model, tokenizer=tokenizer)

or, without ``evaluate.load``, as classes: ``SparcPerplexity().compute(predictions=texts, ...)``,
``SparcToxicity`` and ``SparcRepetition`` (imported on first access, so that the functions do
not pay for importing ``evaluate``).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from hf_sparc.metrics._common import PromptsLike
from hf_sparc.metrics.generation import Sampling, generate_continuations
from hf_sparc.metrics.jigsaw_scorer import JIGSAW_SCORER, jigsaw_scorer
from hf_sparc.metrics.likelihood import log_likelihoods, perplexity, sequence_start, text_nlls
from hf_sparc.metrics.repetitiveness import repetition, response_uniqueness_ratio
from hf_sparc.metrics.toxicity_scoring import (
    DEFAULT_SCORER,
    TOXICITY_SCORERS,
    NamedScorer,
    ScorerLike,
    ToxicityScorer,
    find_toxic_label,
    pipeline_scorer,
    profanity_scorer,
    toxicity,
    toxicity_scorer,
)

# evaluate module name -> (file stem, class name)
_EVALUATE_MODULES = {
    "ioi": ("sparc_ioi", "SparcIOI"),
    "perplexity": ("sparc_perplexity", "SparcPerplexity"),
    "repetition": ("sparc_repetition", "SparcRepetition"),
    "toxicity": ("sparc_toxicity", "SparcToxicity"),
}

__all__ = [
    "DEFAULT_SCORER",
    "JIGSAW_SCORER",
    "TOXICITY_SCORERS",
    "NamedScorer",
    "PromptsLike",
    "Sampling",
    "ScorerLike",
    "SparcIOI",
    "SparcPerplexity",
    "SparcRepetition",
    "SparcToxicity",
    "ToxicityScorer",
    "find_toxic_label",
    "generate_continuations",
    "jigsaw_scorer",
    "log_likelihoods",
    "metric_path",
    "perplexity",
    "pipeline_scorer",
    "profanity_scorer",
    "repetition",
    "response_uniqueness_ratio",
    "sequence_start",
    "text_nlls",
    "toxicity",
    "toxicity_scorer",
]


def metric_path(name: str) -> str:
    """Absolute path of the ``evaluate`` module file for ``name`` (``"ioi"``, ``"perplexity"``,
    ``"repetition"``, ``"toxicity"``), for ``evaluate.load(metric_path(name))``."""
    if name not in _EVALUATE_MODULES:
        raise ValueError(f"unknown metric {name!r}; available: {', '.join(sorted(_EVALUATE_MODULES))}")
    return str(Path(__file__).with_name(f"{_EVALUATE_MODULES[name][0]}.py"))


def __getattr__(name: str) -> Any:
    for stem, class_name in _EVALUATE_MODULES.values():
        if name == class_name:
            return getattr(importlib.import_module(f"hf_sparc.metrics.{stem}"), class_name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
