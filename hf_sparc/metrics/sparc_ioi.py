"""``evaluate`` module: logit difference and accuracy of a two-choice task such as IOI
(:func:`hf_sparc.metrics.task.task_scores`).

Load offline with ``evaluate.load(hf_sparc.metrics.metric_path("ioi"))``; items of the built-in
task come from :func:`hf_sparc.data.tasks.ioi_dataset`.
"""

import datasets
import evaluate

from hf_sparc.metrics._evaluate import CITATION, MODEL_KWARGS
from hf_sparc.metrics.task import task_scores

_DESCRIPTION = (
    "Two-choice next-token task (e.g. indirect object identification): the logit of the first token "
    "of the correct continuation minus that of the wrong one at the last prompt position, averaged, "
    "and the share of prompts where it is positive (accuracy)."
)
_KWARGS_DESCRIPTION = f"""\
Args:
    prompts: the prompts (list of str).
    correct: the correct continuation of each prompt, e.g. " Mary" (list of str; first token used).
    wrong: the wrong continuation of each prompt, e.g. " John" (list of str; first token used).
{MODEL_KWARGS}    batch_size, progress: see hf_sparc.metrics.task.task_scores.
Returns:
    {{"logit_diff": float, "accuracy": float, "n": int}}
"""


class SparcIOI(evaluate.Metric):
    """Mean logit difference (correct − wrong) and accuracy of an in-memory model."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {name: datasets.Value("string") for name in ("prompts", "correct", "wrong")}
            ),
        )

    def _compute(self, prompts, correct, wrong, model, tokenizer, **kwargs) -> dict:
        items = [
            {"prompt": p, "correct": c, "wrong": w} for p, c, w in zip(prompts, correct, wrong, strict=True)
        ]
        return task_scores(model, tokenizer, items, **kwargs)
