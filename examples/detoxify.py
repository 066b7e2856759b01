"""Detoxify a causal LM with the hf_sparc Python API (paper: SparC³, toxicity correction).

Workflow:

1. Load the model (default: the built-in SmolLM2-135M-Instruct, prepared offline).
2. Undesired references from the model's own behaviour: greedily continue --candidates
   built-in toxic prompts (RealToxicityPrompts, reference split) and keep the pairs whose
   continuation scores >= --threshold (offline classifier alt-profanity-check):
   ``hf_sparc.behavior_references(model, tok, prompts, behavior="toxicity", threshold=...)``.
3. General references: --general built-in BoolQ passages (reference split).
4. LRP relevance of every MLP neuron on both sets: ``hf_sparc.attribute(..., method="lrp",
   level="neuron")``; of the toxic pairs only the toxic words are explained
   (``hf_sparc.behaviors.focus_on_words``; ``--focus continuation``: every continuation token).
5. Cut the --count neurons most specific to toxicity (``hf_sparc.select_contrastive``, paper
   Eq. 7) as a mask adapter: ``hf_sparc.apply_masks``.
6. Measure toxic rate / mean toxicity of continuations of held-out toxic prompts and perplexity
   on held-out general text, before and after (``hf_sparc.metrics``), and print a table.
7. Save the adapter (``hf_sparc.save_adapter``): a few KB of indices plus a model card; load it
   with ``AutoModelForCausalLM.from_pretrained(output)`` after ``import hf_sparc``.

Everything runs offline. The defaults are the sizes of ``examples/demo.py`` (sized for a 2-core
CPU and SmolLM2-135M; this script skips the demo's control selections);
``--candidates 32 --eval-prompts 16 --eval-texts 8`` is a quicker look.

    python examples/detoxify.py
    python examples/detoxify.py --model path/to/local/model --count 200 --output runs/detox-200
"""

from __future__ import annotations

from typing import Any

from _common import add_correction_arguments, make_parser, run_correction

from hf_sparc.behaviors import get_behavior
from hf_sparc.workflows.correction import CorrectionSettings


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = make_parser(__doc__, prog="detoxify.py")
    # As hf_sparc.workflows.correction: threshold 0.5 (alt-profanity-check scores are bimodal, so the paper's
    # Perspective 0.9 keeps few continuations); 138 neurons = 0.3% of SmolLM2's 46,080 MLP neurons.
    sizes = CorrectionSettings()
    add_correction_arguments(
        parser,
        count=sizes.count,
        threshold=sizes.threshold,
        threshold_help="a continuation with toxicity score >= this is undesired",
        output="runs/detoxify-adapter",
        focus=get_behavior("toxicity").default_focus,
    )
    args = parser.parse_args(argv)
    return run_correction(parser, args, "toxicity")


if __name__ == "__main__":
    main()
