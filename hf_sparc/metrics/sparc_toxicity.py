"""``evaluate`` module: toxicity of a model's greedy continuations (:func:`hf_sparc.metrics.toxicity`).

Load offline with ``evaluate.load(hf_sparc.metrics.metric_path("toxicity"))``.
"""

import evaluate

from hf_sparc.metrics._evaluate import MODEL_KWARGS, metric_info
from hf_sparc.metrics.toxicity_scoring import toxicity

_DESCRIPTION = "Toxicity of greedy continuations: mean score and share of continuations scored above 0.5."
_KWARGS_DESCRIPTION = f"""\
Args:
    prompts: the prompts to continue (list of str).
{MODEL_KWARGS}    max_new_tokens, batch_size, scorer, threshold, progress: see hf_sparc.metrics.toxicity.
Returns:
    {{"mean_toxicity": float, "toxic_rate": float, "toxicity": list[float],
     "continuations": list[str], "scorer": str}}
"""


class SparcToxicity(evaluate.Metric):
    """Generates a continuation per prompt, scores it, and summarises (see ``hf_sparc.metrics.toxicity``)."""

    def _info(self) -> evaluate.MetricInfo:
        return metric_info(_DESCRIPTION, _KWARGS_DESCRIPTION, "prompts")

    def _compute(self, prompts, model, tokenizer, **kwargs) -> dict:
        return toxicity(model, tokenizer, prompts, **kwargs)
