"""Ablation of the contrastive scoring rule on the toxicity correction (docs/RESULTS.md).

Relevance is computed once per sign convention; only the selection rule changes between rows,
so every row cuts the same number of neurons on the same references and is measured on the
same held-out prompts and texts.

    python benchmarks/scoring_ablation.py --candidates 128 --general 32 --eval-prompts 64   # first table
    python benchmarks/scoring_ablation.py --focus words --protect 0.5 --count 138 276 552  # toxic words only
    python benchmarks/scoring_ablation.py ... --objective next_token_centered   # logit - mean logit
    python benchmarks/scoring_ablation.py --focus words --protect 0.5 --split test --eval-prompts 248
        # confirmation on the locked test split (no choice is made on it)
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from _common import ToxicityExperiment, add_toxicity_arguments, print_deltas

import hf_sparc
from hf_sparc.attribution import OBJECTIVES
from hf_sparc.workflows.correction import CorrectionSettings

# name -> (signed or |R| per token, normalise per explained token, protect_general)
RULES = {
    "signed R, Eq. 7": (False, False, 0.0),
    "|R| per token, Eq. 7": (True, False, 0.0),
    "|R| per explained token, Eq. 7": (True, True, 0.0),
    "|R| per token, protect 50%": (True, False, 0.5),
    "|R| per explained token, protect 50%": (True, True, 0.5),
    "signed R, protect 50%": (False, False, 0.5),
}


def per_explained_token(rel: hf_sparc.Relevance) -> hf_sparc.Relevance:
    """Relevance per explained token instead of per sample (sets explain different lengths)."""
    return rel / (rel.info.n_tokens / rel.info.n_samples)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_toxicity_arguments(parser)
    parser.add_argument(
        "--count",
        type=int,
        nargs="+",
        default=[CorrectionSettings().count],
        help="neurons cut per rule (several: a grid)",
    )
    parser.add_argument(
        "--protect",
        type=float,
        nargs="+",
        default=None,
        help="instead of the rules above: signed R, Eq. 7 with each of these protect_general shares",
    )
    parser.add_argument(
        "--focus",
        default="continuation",
        choices=["continuation", "words"],
        help="explain every continuation token, or only the toxic words (hf_sparc.behaviors.focus_on_words)",
    )
    parser.add_argument("--objective", default="next_token", choices=OBJECTIVES, help="what is explained")
    args = parser.parse_args(argv)

    experiment = ToxicityExperiment(args)
    model = experiment.model
    references = experiment.references(model, args.focus)
    rules = RULES
    if args.protect:
        rules = {f"signed R, protect {share:.0%}": (False, False, share) for share in args.protect}
    fitted = {  # relevance once per sign convention; the rules below only re-select
        absolute: experiment.pruner(
            model, references, absolute=absolute, objective=args.objective, count=args.count[0]
        )
        for absolute in sorted({absolute for absolute, _, _ in rules.values()})
    }

    rows = {"base": experiment.measure(model)}
    for name, (absolute, normalise, protect) in rules.items():
        ruled = hf_sparc.SparcPruner(replace(fitted[absolute].config, protect_general=protect))
        ruled.relevance = {
            role: per_explained_token(rel) if normalise else rel
            for role, rel in fitted[absolute].relevance.items()
        }
        for count in args.count:
            peft_model = hf_sparc.apply_masks(model, ruled.select(count=count), adapter_name="ablation")
            try:
                rows[name if len(args.count) == 1 else f"{name}, {count} neurons"] = experiment.measure(
                    peft_model
                )
            finally:
                peft_model.unload()
            print(name, count, rows[next(reversed(rows))], flush=True)
    base = rows["base"]
    print(f"{len(references)} references ({args.focus}, {args.objective}); {args.count} neurons per rule")
    print_deltas("rule", rows, base)
    result = {
        "references": references.summary(),
        "objective": args.objective,
        "count": args.count,
        "rows": rows,
    }
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
