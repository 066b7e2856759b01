"""Cost of LRP attribution vs Gradient×Input and vs a plain training step, as ratios.

Each case runs in a fresh process so peak memory (max RSS growth after loading the model)
is not polluted by the others. Default model: random-init with SmolLM2-135M's shape; pass
``--model DIR`` for a real checkpoint (e.g. the cached SmolLM2 from scripts/setup.sh).

    python benchmarks/attribution_cost.py --batch-size 8 --seq-len 128
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from _common import load_model, peak_rss_mb, random_texts, run_isolated, timed

import hf_sparc

CASES = ("train_step", "lrp_neuron", "gradient_neuron", "lrp_weight")


def run_case(case: str, args) -> dict:
    model = load_model(args.model)
    ids = random_texts(args.batch_size, args.seq_len, model.config.vocab_size)
    batch = torch.tensor([t["input_ids"] for t in ids])
    before = peak_rss_mb()
    if case == "train_step":
        model.train()

        def step():
            model.zero_grad(set_to_none=True)
            model(input_ids=batch, labels=batch).loss.backward()

        seconds = timed(step, args.repeats)
    else:
        method, level = case.split("_")
        seconds = timed(
            lambda: hf_sparc.attribute(
                model,
                ids,
                method=method,
                level=level,
                batch_size=args.batch_size,
                max_length=args.seq_len,
                progress=False,
            ),
            args.repeats,
        )
    return {"case": case, "seconds": seconds, "peak_mb": peak_rss_mb() - before}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=None, help="local model folder (default: random SmolLM2 shape)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args)))
        return
    forwarded = [f"--batch-size={args.batch_size}", f"--seq-len={args.seq_len}", f"--repeats={args.repeats}"]
    if args.model:
        forwarded.append(f"--model={args.model}")
    results = {case: run_isolated(__file__, case, forwarded) for case in CASES}
    base = results["train_step"]
    shape = f"batch {args.batch_size}×{args.seq_len}"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {shape}")
    print(f"{'case':<18}{'s/batch':>10}{'peak MB':>10}{'time/train':>12}{'mem/train':>11}")
    for case, r in results.items():
        print(
            f"{case:<18}{r['seconds']:>10.3f}{r['peak_mb']:>10.0f}"
            f"{r['seconds'] / base['seconds']:>12.2f}{r['peak_mb'] / max(base['peak_mb'], 1):>11.2f}"
        )
    ratio = results["lrp_neuron"]["seconds"] / results["gradient_neuron"]["seconds"]
    print(f"LRP / Gradient×Input time (neuron level): {ratio:.2f}")


if __name__ == "__main__":
    main()
