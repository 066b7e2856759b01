"""Cost of attribution as ratios: LRP vs Gradient×Input, vs a training step, vs a forward.

Times are CPU seconds of the measuring process at a fixed thread count (``--threads``, default
1), which other load on a shared machine does not inflate; wall time is printed alongside. Each
case runs in a fresh process so peak memory (max RSS growth after loading the model and
building the inputs) is not polluted by the others. Default model: random-init with
SmolLM2-135M's shape; ``--model DIR`` for a real checkpoint (``--model builtin``: the cached
SmolLM2 from scripts/setup.sh).

    python benchmarks/attribution_cost.py --batch-size 8 --seq-len 128
    python benchmarks/attribution_cost.py --batch-size 4 --repeats 2 --model builtin \
        --record docs/results/attribution_cost_real.json

Cases (issue "Performance and scale" targets in brackets):

* ``train_step``: forward + backward with parameter gradients and the full-vocabulary loss.
* ``forward``: a plain inference forward with full-vocabulary logits.
* ``lrp_neuron`` / ``gradient_neuron`` / ``lrp_weight``: ``hf_sparc.attribute`` on one batch
  [LRP / gradient ≤ 1.15; LRP / train step ≤ 0.5 in time and ≤ 0.8 in memory].
* ``wanda_weight`` [Wanda / forward ≤ 1.2].
* ``long`` / ``long_gc``: LRP neuron level at ``--long-seq`` tokens without / with gradient
  checkpointing [memory ratio ≤ 0.5].
* ``n_small`` / ``n_large``: LRP neuron level on ``--scale`` reference sets of short texts
  [time per sample and memory flat within ±10%].
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

CASES = (
    "train_step",
    "forward",
    "gradient_neuron",
    "lrp_neuron",
    "lrp_weight",
    "wanda_weight",
    "long",
    "long_gc",
    "n_small",
    "n_large",
)


def _attribute(model, texts, args, method="lrp", level="neuron", **options) -> None:
    hf_sparc.attribute(
        model, texts, method=method, level=level, batch_size=args.batch_size, progress=False, **options
    )


def run_case(case: str, args) -> dict:
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    vocab = model.config.vocab_size
    texts = random_texts(args.batch_size, args.seq_len, vocab)
    batch = torch.tensor([t["input_ids"] for t in texts])
    n_samples = args.batch_size
    if case in ("long", "long_gc"):
        texts = random_texts(args.long_batch, args.long_seq, vocab)
        n_samples = args.long_batch
    elif case in ("n_small", "n_large"):
        n_samples = args.scale[0] if case == "n_small" else args.scale[1]
        texts = random_texts(n_samples, args.scale_seq, vocab)
    before = peak_rss_mb()
    if case == "train_step":
        model.train()

        def step():
            model.zero_grad(set_to_none=True)
            model(input_ids=batch, labels=batch).loss.backward()

        seconds = timed(step, args.repeats)
    elif case == "forward":

        def forward():
            with torch.inference_mode():
                model(input_ids=batch)

        seconds = timed(forward, args.repeats)
    elif case in ("long", "long_gc"):
        seconds = timed(
            lambda: _attribute(
                model, texts, args, max_length=args.long_seq, gradient_checkpointing=case == "long_gc"
            ),
            1,
            warm_up=False,
        )
    elif case in ("n_small", "n_large"):
        _attribute(model, texts[: args.batch_size], args)  # warm-up on one batch
        seconds = timed(lambda: _attribute(model, texts, args), 1, warm_up=False)
    else:
        method, level = case.split("_")
        seconds = timed(lambda: _attribute(model, texts, args, method, level), args.repeats)
    return {
        "case": case,
        "seconds": seconds["cpu"],
        "wall": seconds["wall"],
        "per_sample": seconds["cpu"] / n_samples,
        "peak_mb": peak_rss_mb() - before,
    }


def _ratio(results: dict, a: str, b: str, key: str) -> float:
    return results[a][key] / max(results[b][key], 1e-9)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=None, help="local model folder, 'builtin' (default: random)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per case")
    parser.add_argument("--long-seq", type=int, default=512)
    parser.add_argument("--long-batch", type=int, default=2)
    parser.add_argument("--scale", type=int, nargs=2, default=[32, 256], metavar=("SMALL", "LARGE"))
    parser.add_argument("--scale-seq", type=int, default=32, help="tokens per text in the n_* cases")
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--record", default=None, help="also write the results and ratios to this JSON file")
    parser.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.model == "builtin":
        from hf_sparc.data import default_model_path

        args.model = str(default_model_path())
    if args.case:
        print(json.dumps(run_case(args.case, args)))
        return
    forwarded = [
        f"--batch-size={args.batch_size}",
        f"--seq-len={args.seq_len}",
        f"--repeats={args.repeats}",
        f"--threads={args.threads}",
        f"--long-seq={args.long_seq}",
        f"--long-batch={args.long_batch}",
        f"--scale-seq={args.scale_seq}",
        "--scale",
        *map(str, args.scale),
    ]
    if args.model:
        forwarded.append(f"--model={args.model}")
    results = {}
    for case in args.cases:
        results[case] = run_isolated(__file__, case, forwarded)
        print(json.dumps(results[case]), flush=True)
    print(f"torch {torch.__version__}, {args.threads} thread(s), model {args.model or 'random'}")
    print("times: CPU seconds of the measuring process (stable under other load); wall for reference")
    print(f"{'case':<16}{'cpu s':>9}{'wall s':>9}{'cpu s/sample':>13}{'peak MB':>9}")
    for case, r in results.items():
        print(f"{case:<16}{r['seconds']:>9.3f}{r['wall']:>9.3f}{r['per_sample']:>13.4f}{r['peak_mb']:>9.0f}")
    figures = [
        ("LRP / gradient time (neuron)", "lrp_neuron", "gradient_neuron", "seconds", "≤ 1.15"),
        ("LRP / train step time (neuron)", "lrp_neuron", "train_step", "seconds", "≤ 0.5"),
        ("LRP / train step peak memory (neuron)", "lrp_neuron", "train_step", "peak_mb", "≤ 0.8"),
        ("LRP / train step time (weight)", "lrp_weight", "train_step", "seconds", "-"),
        ("LRP / train step peak memory (weight)", "lrp_weight", "train_step", "peak_mb", "-"),
        ("Wanda / forward time", "wanda_weight", "forward", "seconds", "≤ 1.2"),
        ("checkpointing / plain peak memory (long)", "long_gc", "long", "peak_mb", "≤ 0.5"),
        ("checkpointing / plain time (long)", "long_gc", "long", "seconds", "-"),
        ("time per sample, large / small set", "n_large", "n_small", "per_sample", "1 ± 0.1"),
        ("peak memory, large / small set", "n_large", "n_small", "peak_mb", "1 ± 0.1"),
    ]
    print(f"\n{'figure':<44}{'ratio':>8}  target")
    ratios = {}
    for label, a, b, key, target in figures:
        if a in results and b in results:
            ratios[label] = {"ratio": _ratio(results, a, b, key), "target": target}
            print(f"{label:<44}{ratios[label]['ratio']:>8.2f}  {target}")
    if args.record:
        from hf_sparc.reports.render import provenance

        settings = {k: v for k, v in vars(args).items() if k not in ("case", "record")}
        record = {**provenance(), "settings": settings, "cases": results, "ratios": ratios}
        with open(args.record, "w") as file:
            file.write(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
