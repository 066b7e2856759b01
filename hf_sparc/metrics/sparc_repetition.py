"""``evaluate`` module: RUR of greedy continuations (``hf_sparc.metrics.repetition``).

Load offline with ``evaluate.load(hf_sparc.metrics.metric_path("repetition"))``.
"""

import evaluate

from hf_sparc.metrics._evaluate import MODEL_KWARGS, metric_info
from hf_sparc.metrics.repetitiveness import repetition

_DESCRIPTION = "Mean response uniqueness ratio (unique / generated tokens) of greedy continuations."
_KWARGS_DESCRIPTION = f"""\
Args:
    prompts: the prompts to continue (list of str).
{MODEL_KWARGS}    max_new_tokens, batch_size, progress: see hf_sparc.metrics.repetition.
Returns:
    {{"mean_rur": float, "rur": list[float], "n_empty": int, "continuations": list[str]}}
"""


class SparcRepetition(evaluate.Metric):
    """Generates a continuation per prompt and averages its RUR (see ``hf_sparc.metrics.repetition``)."""

    def _info(self) -> evaluate.MetricInfo:
        return metric_info(_DESCRIPTION, _KWARGS_DESCRIPTION, "prompts")

    def _compute(self, prompts, model, tokenizer, **kwargs) -> dict:
        return repetition(model, tokenizer, prompts, **kwargs)
