"""What the ``evaluate`` module files (``sparc_*.py``) share."""

from __future__ import annotations

import datasets
import evaluate

CITATION = """\
@article{hatefi2025sparc3,
  title   = {Attribution-guided Pruning for Compression, Circuit Discovery, and Targeted Correction in LLMs},
  author  = {Hatefi, Sayed Mohammad Vakilzadeh and others},
  journal = {arXiv preprint arXiv:2506.13727},
  year    = {2025}
}
"""

MODEL_KWARGS = """\
    model: the causal LM (``*ForCausalLM`` or a ``PeftModel``), as an in-memory object.
    tokenizer: its tokenizer.
"""


def metric_info(description: str, inputs_description: str, input_name: str) -> evaluate.MetricInfo:
    """Info of a metric taking one column of strings, ``input_name``, plus keyword arguments."""
    return evaluate.MetricInfo(
        description=description,
        citation=CITATION,
        inputs_description=inputs_description,
        features=datasets.Features({input_name: datasets.Value("string")}),
    )
