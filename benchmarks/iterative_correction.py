"""Toxicity correction in rounds: cut, let the cut model write its toxic continuations again,
attribute on the cut model, cut again (docs/RESULTS.md).

A one-shot cut explains the toxic words of the base model; once their strongest units are gone,
the model can reach toxic words through others. Each round here regenerates the references with
the model as cut so far (``--same-references`` keeps the base model's instead, attributed on the
cut model), attributes both sets on that model (cut units have exactly zero relevance, so they
are never picked twice), and cuts ``--count`` more neurons (signed LRP, Eq. 7, protect 50%).
After every round the union of the cuts is measured on the held-out prompts and texts.

    python benchmarks/iterative_correction.py --rounds 4 --count 46   # 4 x 46 = 184 neurons
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer

import hf_sparc
from hf_sparc.assets import builtin_dataset, default_model_path
from hf_sparc.behavior import focus_on_words
from hf_sparc.correction import CorrectionSettings
from hf_sparc.metrics import perplexity, toxicity


def main(argv: list[str] | None = None) -> dict:
    sizes = CorrectionSettings()
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--model", default="smollm2-135m-instruct", help="built-in name or local folder")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--count", type=int, default=46, help="neurons cut per round")
    parser.add_argument("--same-references", action="store_true", help="keep the base model's references")
    parser.add_argument("--focus", default="words", choices=["continuation", "words"])
    parser.add_argument("--candidates", type=int, default=sizes.n_candidates)
    parser.add_argument("--threshold", type=float, default=sizes.threshold)
    parser.add_argument("--general", type=int, default=sizes.n_general)
    parser.add_argument("--protect", type=float, default=sizes.protect_general)
    parser.add_argument("--eval-prompts", type=int, default=sizes.n_eval_prompts)
    parser.add_argument("--eval-skip", type=int, default=0, help="skip this many held-out prompts")
    parser.add_argument("--eval-texts", type=int, default=sizes.n_eval_texts)
    parser.add_argument("--max-new-tokens", type=int, default=sizes.max_new_tokens)
    parser.add_argument("--max-length", type=int, default=sizes.max_length)
    parser.add_argument("--output", default=None, help="optional JSON file for the results")
    args = parser.parse_args(argv)

    path = Path(args.model) if Path(args.model).is_dir() else default_model_path(args.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    candidates = builtin_dataset("toxic-prompts", "reference")[: args.candidates]
    general = builtin_dataset("general", "reference")[: args.general]
    held_out = builtin_dataset("toxic-prompts", "evaluation")
    prompts = held_out[args.eval_skip : args.eval_skip + args.eval_prompts]
    texts = builtin_dataset("general", "evaluation")[: args.eval_texts]
    generation = dict(max_new_tokens=args.max_new_tokens, progress=False)

    def measure(m) -> dict[str, float]:
        return {
            "toxic_rate": toxicity(m, tokenizer, prompts, **generation)["toxic_rate"],
            "perplexity": perplexity(m, tokenizer, texts, max_length=args.max_length, progress=False),
        }

    def references_of(m) -> hf_sparc.BehaviorSet:
        found = hf_sparc.behavior_references(m, tokenizer, candidates, threshold=args.threshold, **generation)
        return focus_on_words(found) if args.focus == "words" else found

    rows = [{"round": 0, "neurons": 0, **measure(model)}]
    print(rows[-1], flush=True)
    masks: hf_sparc.Masks | None = None
    references = None
    for round_ in range(1, args.rounds + 1):
        start = time.perf_counter()
        # attribution hooks plain projections, so the cut so far is merged into a copy
        current = hf_sparc.apply_masks(copy.deepcopy(model), masks).merge_and_unload() if masks else model
        if references is None or not args.same_references:
            references = references_of(current)
        common = dict(tokenizer=tokenizer, level="neuron")
        # references: prompt + up to max_new_tokens generated tokens, room for the whole prompt
        undesired = hf_sparc.attribute(
            current, list(references), max_length=args.max_length + args.max_new_tokens, **common
        )
        general_rel = hf_sparc.attribute(current, general, max_length=args.max_length, **common)
        del current
        new = hf_sparc.select_contrastive(
            undesired=undesired, general=general_rel, count=args.count, protect_general=args.protect
        )
        masks = new if masks is None else masks.union(new)
        peft_model = hf_sparc.apply_masks(model, masks, adapter_name="cut")
        try:
            row = measure(peft_model)
        finally:
            peft_model.unload()
        rows.append(
            {
                "round": round_,
                "neurons": masks.total(),
                "references": len(references),
                "continuations": references.n_continuations,
                **row,
                "minutes": (time.perf_counter() - start) / 60,
            }
        )
        print(rows[-1], flush=True)
    base = rows[0]
    print(f"{'round':>5}{'neurons':>9}{'refs':>6}{'toxic rate':>12}{'Δ':>9}{'perplexity':>12}{'Δ':>9}")
    for row in rows:
        deltas = [(row[k] - base[k]) / base[k] if base[k] else 0.0 for k in ("toxic_rate", "perplexity")]
        print(
            f"{row['round']:>5}{row['neurons']:>9}{row.get('references', 0):>6}{row['toxic_rate']:>12.4f}"
            f"{deltas[0]:>9.1%}{row['perplexity']:>12.2f}{deltas[1]:>9.1%}"
        )
    result = {"settings": vars(args), "rows": rows}
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
