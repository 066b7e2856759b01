"""Toxicity correction in rounds: cut, let the cut model write its toxic continuations again,
attribute on the cut model, cut again (docs/RESULTS.md).

A one-shot cut explains the toxic words of the base model; once their strongest units are gone,
the model can reach toxic words through others. Each round here regenerates the references with
the model as cut so far (``--same-references`` keeps the base model's instead, attributed on the
cut model), attributes both sets on that model and cuts ``--count`` more neurons (signed LRP,
Eq. 7, protect 50%). Cut units have exactly zero relevance, so none is picked twice while
``--count`` units score below zero (the neuron column counts the union). After every round the
union of the cuts is measured on the held-out prompts and texts.

    python benchmarks/iterative_correction.py --rounds 4 --count 46   # 4 x 46 = 184 neurons
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

from _common import ToxicityExperiment, add_toxicity_arguments, print_deltas

import hf_sparc
from hf_sparc.workflows.correction import CorrectionSettings


def main(argv: list[str] | None = None) -> dict:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    add_toxicity_arguments(parser)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--count", type=int, default=46, help="neurons cut per round")
    parser.add_argument("--same-references", action="store_true", help="keep the base model's references")
    parser.add_argument("--focus", default="words", choices=["continuation", "words"])
    parser.add_argument("--protect", type=float, default=CorrectionSettings().protect_general)
    parser.add_argument("--final-only", action="store_true", help="measure only after the last round")
    args = parser.parse_args(argv)

    experiment = ToxicityExperiment(args)
    model = experiment.model
    rows = {"round 0": {"neurons": 0, **experiment.measure(model)}}
    print(rows["round 0"], flush=True)
    masks: hf_sparc.Masks | None = None
    references = None
    for round_ in range(1, args.rounds + 1):
        start = time.perf_counter()
        # attribution hooks plain projections, so the cut so far is merged into a copy
        current = hf_sparc.apply_masks(copy.deepcopy(model), masks).merge_and_unload() if masks else model
        if references is None or not args.same_references:
            references = experiment.references(current, args.focus)
        new = experiment.pruner(current, references, count=args.count, protect_general=args.protect).masks
        del current
        masks = new if masks is None else masks.union(new)
        if args.final_only and round_ < args.rounds:
            print(f"round {round_}: {masks.total()} neurons cut", flush=True)
            continue
        peft_model = hf_sparc.apply_masks(model, masks, adapter_name="cut")
        try:
            row = experiment.measure(peft_model)
        finally:
            peft_model.unload()
        rows[f"round {round_}"] = {
            "neurons": masks.total(),
            "references": len(references),
            "continuations": references.n_continuations,
            **row,
            "minutes": (time.perf_counter() - start) / 60,
        }
        print(rows[f"round {round_}"], flush=True)
    print_deltas(
        "round (neurons cut so far)", {f"{k} ({r['neurons']})": r for k, r in rows.items()}, rows["round 0"]
    )
    result = {"settings": vars(args), "rows": rows}
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
