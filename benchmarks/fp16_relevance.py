"""LRP relevance of a float16 model against the same model in float32 (issue: fp16 that works).

Neuron-level LRP of SmolLM2-135M-Instruct on general texts in both dtypes: how many scores are
finite, the Spearman rank correlation of the neuron scores, and the overlap of the 138 most and
least relevant neurons (the count the correction cuts). Writes one JSON record.

    python benchmarks/fp16_relevance.py --texts 16 --record docs/results/fp16_relevance.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import hf_sparc
from hf_sparc.cli._common import load_model
from hf_sparc.data import builtin_dataset
from hf_sparc.reports.render import provenance


def ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks 0..n-1 (ties broken by position; float scores rarely tie)."""
    order = values.argsort()
    out = torch.empty_like(order, dtype=torch.float64)
    out[order] = torch.arange(values.numel(), dtype=torch.float64)
    return out


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([ranks(a), ranks(b)]))[0, 1])


def overlap(a: torch.Tensor, b: torch.Tensor, k: int, largest: bool) -> float:
    top_a = set(a.topk(k, largest=largest).indices.tolist())
    return len(top_a & set(b.topk(k, largest=largest).indices.tolist())) / k


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--texts", type=int, default=16)
    parser.add_argument("--count", type=int, default=138)
    parser.add_argument("--record", default=None)
    args = parser.parse_args(argv)
    texts = builtin_dataset("general", "dev")[: args.texts]
    scores, seconds = {}, {}
    for dtype in ("float32", "float16"):
        model, tokenizer = load_model(args.model, "cpu", dtype)
        start = time.time()
        rel = hf_sparc.attribute(
            model, texts, tokenizer=tokenizer, level="neuron", max_length=64, batch_size=4
        )
        seconds[dtype] = time.time() - start
        scores[dtype] = torch.cat([rel[name].double().flatten() for name in rel])
    full, half = scores["float32"], scores["float16"]
    record = {
        "model": args.model,
        "texts": len(texts),
        "neurons": full.numel(),
        "finite_fp16": int(torch.isfinite(half).sum()),
        "spearman": spearman(full, half),
        f"top{args.count}_overlap_most_relevant": overlap(full, half, args.count, largest=True),
        f"top{args.count}_overlap_least_relevant": overlap(full, half, args.count, largest=False),
        "seconds": seconds,
        **provenance(),
    }
    print(json.dumps(record, indent=2))
    if args.record:
        Path(args.record).write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
