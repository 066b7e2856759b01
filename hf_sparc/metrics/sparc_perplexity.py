"""``evaluate`` module: perplexity of an in-memory model (:func:`hf_sparc.metrics.perplexity`).

Load offline with ``evaluate.load(hf_sparc.metrics.metric_path("perplexity"))``.
"""

import evaluate

from hf_sparc.metrics._evaluate import MODEL_KWARGS, metric_info
from hf_sparc.metrics.likelihood import perplexity

_DESCRIPTION = "Perplexity: exp of the mean next-token NLL over all predicted tokens of the texts."
_KWARGS_DESCRIPTION = f"""\
Args:
    predictions: the texts (list of str).
{MODEL_KWARGS}    max_length, batch_size, max_tokens, progress: see hf_sparc.metrics.perplexity.
Returns:
    {{"perplexity": float}}
"""


class SparcPerplexity(evaluate.Metric):
    """Perplexity of a model object on ``predictions`` (the hub metric needs a model id instead)."""

    def _info(self) -> evaluate.MetricInfo:
        return metric_info(_DESCRIPTION, _KWARGS_DESCRIPTION, "predictions")

    def _compute(self, predictions, model, tokenizer, **kwargs) -> dict:
        return {"perplexity": perplexity(model, tokenizer, predictions, **kwargs)}
