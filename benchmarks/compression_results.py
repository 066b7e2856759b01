"""50% unstructured sparsity on SmolLM2-135M-Instruct: LRP vs Wanda vs magnitude, global and
row-wise (docs/RESULTS.md, "Compression").

Scores come from general reference text (built-in ``general`` BoolQ passages, reference split);
perplexity is measured on the dev split with a fixed token budget, so every model is
scored on exactly the same tokens.

    python benchmarks/compression_results.py --n-reference 64 --n-eval 32 --max-length 128 \
        --output runs/compression_results.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_sparc import data as assets
from hf_sparc.workflows.compression import COMPRESSION_METHODS, COMPRESSION_SCOPES, compare_compression


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=None, help="model folder (default: the built-in SmolLM2)")
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--n-reference", type=int, default=64)
    parser.add_argument("--n-eval", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--methods", nargs="+", default=list(COMPRESSION_METHODS))
    parser.add_argument("--signed-lrp", action="store_true", help="rank signed R instead of sum |R|")
    parser.add_argument("--output", default="runs/compression_results.json")
    args = parser.parse_args()

    path = args.model or str(assets.default_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    reference = assets.builtin_dataset("general", "reference")[: args.n_reference]
    evaluation = assets.builtin_dataset("general", "dev")[: args.n_eval]
    before, rows = compare_compression(
        model, tokenizer, reference, evaluation, sparsity=args.sparsity, methods=args.methods,
        scopes=COMPRESSION_SCOPES, absolute=not args.signed_lrp, max_length=args.max_length,
        max_tokens=args.n_eval * (args.max_length - 1),
    )  # fmt: skip
    print(f"unpruned perplexity {before:.3f}")
    for row in rows:
        print(
            f"{row.method:10s} {row.scope:7s} pruned {row.pruned}/{row.total} perplexity {row.perplexity:.3f}"
        )
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "model": path,
        "settings": vars(args),
        "perplexity_before": before,
        "rows": [r.to_dict() for r in rows],
    }
    output.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
