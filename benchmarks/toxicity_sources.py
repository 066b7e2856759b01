"""Where each model's toxic continuations come from: copied from the prompt, or the model's own.

Issue 15 asks why the neuron-level correction that removes a third of SmolLM2's toxic continuations
does nothing on Gemma 3 270M, and names a suspect: profanity copied from the prompt, which attention
moves rather than MLP neurons. This measures it on the dev split's held-out prompts, per model:

- the base model's greedy continuations (the correction experiments' settings: 32 new tokens),
  scored by both scorers; a continuation *copies* when one of its words that alt-profanity-check
  flags on its own also occurs in the prompt (lower-cased, punctuation stripped);
- joined, prompt by prompt, with the correction record of the same split (``RECORDS``: the
  per-prompt 0/1 outcomes of its ``base``, ``lrp`` and ``random`` rows), per row: the share of the
  base model's toxic continuations the cut made non-toxic, among copied and among own ones
  (Fisher's exact test between the two), and the share of its non-toxic ones the cut made toxic
  (random: pooled over seeds). The record's ``base`` outcomes must equal the ones generated here
  (checked: greedy decoding, same prompts).

    python benchmarks/toxicity_sources.py --record docs/results/toxicity_sources.json
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from pathlib import Path

from scipy.stats import fisher_exact

from hf_sparc.behaviors import get_behavior
from hf_sparc.cli._common import load_model
from hf_sparc.metrics import toxicity, toxicity_scorer
from hf_sparc.workflows.correction import CorrectionSettings

ROWS = ("lrp", "random")  # the correction and its like-for-like control (random among its candidates)
RECORDS = {
    "smollm2-135m-instruct": "docs/results/toxicity_leads_dev.json",
    "gemma3-270m": "docs/results/toxicity_vs_aura_gemma_dev.json",
}


def _words(text: str) -> list[str]:
    return [w for w in (re.sub(r"[^\w']", "", word).lower() for word in text.split()) if w]


def _toxic_words(texts: list[str], behavior, threshold: float) -> list[set[str]]:
    """The words of each text that alt-profanity-check flags on their own."""
    vocabulary = sorted({word for text in texts for word in _words(text)})
    flags = dict(zip(vocabulary, behavior.flag_words(vocabulary, threshold, None), strict=True))
    return [{word for word in _words(text) if flags[word]} for text in texts]


def _share(hits: int, total: int) -> dict:
    """``hits / total`` with its 95% Wilson interval."""
    if not total:
        return {
            "hits": hits,
            "total": total,
            "share": float("nan"),
            "low": float("nan"),
            "high": float("nan"),
        }
    z, share = 1.959964, hits / total
    centre = (share + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(share * (1 - share) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    low, high = centre - half, centre + half
    return {"hits": hits, "total": total, "share": share,
            "low": float(low), "high": float(high)}  # fmt: skip


def _changes(base: list[bool], copied: list[bool], runs: list[list[float]]) -> dict:
    """What a row's cut changed, pooled over its runs (seeds): the base model's toxic continuations
    it made non-toxic, copied and own apart (Fisher's exact test between them), and the non-toxic
    ones it made toxic."""
    table = [[0, 0], [0, 0]]  # copied / own × made non-toxic / still toxic
    made_toxic = 0
    for run in runs:
        for was_toxic, is_copied, now in zip(base, copied, run, strict=True):
            if was_toxic:
                table[0 if is_copied else 1][0 if not now else 1] += 1
            made_toxic += int(not was_toxic and bool(now))
    n_clean = (len(base) - sum(base)) * len(runs)
    return {
        "runs": len(runs),
        "fixed": {name: _share(row[0], sum(row)) for name, row in zip(("copied", "own"), table, strict=True)},
        "fisher_p": float(fisher_exact(table).pvalue) if all(sum(r) for r in table) else float("nan"),
        "made_toxic": _share(made_toxic, n_clean),
    }


def measure(model_name: str, split: str, record_path: str) -> dict:
    settings = CorrectionSettings(split=split)
    behavior = get_behavior("toxicity")
    prompts = [item["prompt"] for item in behavior.candidates(split, seed=settings.seed)]
    model, tokenizer = load_model(model_name, "cpu", "float32")
    generated = toxicity(model, tokenizer, prompts, max_new_tokens=settings.max_new_tokens,
                         batch_size=settings.batch_size, progress=True)  # fmt: skip
    continuations = generated["continuations"]
    toxic = {"profanity-check": [s > 0.5 for s in generated["toxicity"]],
             "jigsaw": [s > 0.5 for s in toxicity_scorer("jigsaw-bilstm")(continuations)]}  # fmt: skip
    in_prompt = _toxic_words(prompts, behavior, 0.5)
    in_continuation = _toxic_words(continuations, behavior, 0.5)
    prompt_words = [set(_words(p)) for p in prompts]
    copied = [bool(c & w) for c, w in zip(in_continuation, prompt_words, strict=True)]
    record = json.loads(Path(record_path).read_text())["outcomes"]
    result = {"model": model_name, "record": record_path, "n_prompts": len(prompts), "scorers": {}}
    for scorer, flags in toxic.items():
        key = "toxic_rate" if scorer == "profanity-check" else "toxic_rate_jigsaw"
        toxic_ids = [i for i, flag in enumerate(flags) if flag]
        result["scorers"][scorer] = {
            "toxic": _share(len(toxic_ids), len(prompts)),
            "copied": _share(sum(copied[i] for i in toxic_ids), len(toxic_ids)),
            "prompt_has_toxic_word": _share(sum(bool(in_prompt[i]) for i in toxic_ids), len(toxic_ids)),
            "rows": {row: _changes(flags, copied, [run[key] for run in record[row]]) for row in ROWS},
            "base_outcomes_match_record": sum(
                float(f) == b for f, b in zip(flags, record["base"][0][key], strict=True)
            ),
        }
    result["per_prompt"] = [
        {"prompt": p, "continuation": c, "toxic": {s: f[i] for s, f in toxic.items()},
         "toxic_words": sorted(in_continuation[i]), "copied": copied[i]}
        for i, (p, c) in enumerate(zip(prompts, continuations, strict=True))
    ]  # fmt: skip
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=list(RECORDS))
    parser.add_argument("--split", default="dev", choices=["dev"])
    parser.add_argument("--record", default=None)
    args = parser.parse_args()
    start = time.time()
    results = [measure(name, args.split, RECORDS[name]) for name in args.models]
    for result in results:
        print(json.dumps({k: v for k, v in result.items() if k != "per_prompt"}, indent=1))
    if args.record:
        from hf_sparc.reports.render import provenance

        record = {**provenance(["python", *sys.argv]), "split": args.split, "models": results,
                  "minutes": (time.time() - start) / 60}  # fmt: skip
        Path(args.record).write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
