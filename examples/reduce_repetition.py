"""Reduce repetitive generation by pruning single weights (paper: SparC³, repetition correction).

Workflow (the same as ``detoxify.py``'s, for repetition):

1. Undesired references: greedily continue --candidates built-in ``repetition-prompts``
   (reference split) and keep the pairs whose continuation has a response uniqueness ratio
   (RUR: unique tokens / tokens) below --threshold:
   ``hf_sparc.behavior_references(model, tok, prompts, behavior="repetition", threshold=...)``.
2. General references: --general built-in BoolQ passages.
3. LRP relevance of single **weights** of the MLP up-projections (``up_proj``; ``fc1`` in OPT,
   ``c_fc`` in GPT-2): ``hf_sparc.attribute(..., method="lrp", level="weight",
   target_modules=<up-projections>)``.
4. Cut the weights most specific to repetition (``hf_sparc.select_contrastive``). The paper cuts
   about 0.03% of OPT's fc1 weights, so the default is --fraction 0.0003 of the up-projection
   weights: 7,963 of SmolLM2-135M's 26.5M (30 layers x 1536 x 576); --count N sets it exactly.
5. Measure mean RUR of continuations of held-out repetition prompts (``hf_sparc.metrics.repetition``,
   **higher is better**) and perplexity on held-out general text, before and after.
6. Save the mask adapter (``hf_sparc.save_adapter``).

    python examples/reduce_repetition.py
    python examples/reduce_repetition.py --count 4000 --output runs/repetition-4000
"""

from __future__ import annotations

from typing import Any

from _common import add_correction_arguments, make_parser, run_correction

from hf_sparc.architectures import get_architecture, layer_part_names
from hf_sparc.behaviors import get_behavior

PAPER_FRACTION = 0.0003  # ~0.03% of the fc1 weights (paper, OPT)


def up_projections(model) -> list[str]:
    """Full names of the MLP up-projections of every decoder layer (any supported architecture)."""
    return layer_part_names(model, get_architecture(model), "mlp_up")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = make_parser(__doc__, prog="reduce_repetition.py")
    add_correction_arguments(
        parser,
        count=None,
        fraction=PAPER_FRACTION,
        level="weight",
        threshold=get_behavior("repetition").default_threshold,  # the paper's
        threshold_help="a continuation with response uniqueness ratio < this is undesired",
        output="runs/repetition-adapter",
        focus=get_behavior("repetition").default_focus,
    )
    parser.set_defaults(candidates=36, eval_prompts=36)  # the built-in set has 36 prompts per split
    args = parser.parse_args(argv)
    # --level neuron/head: hf_sparc's default targets for that level (up-projections / attention)
    targets = up_projections if args.level == "weight" else (lambda model: None)
    return run_correction(parser, args, "repetition", target_modules=targets)


if __name__ == "__main__":
    main()
