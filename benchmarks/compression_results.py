"""50% unstructured sparsity on SmolLM2-135M-Instruct: LRP vs Wanda vs magnitude, global and
row-wise (docs/RESULTS.md, "Compression").

Scores come from general reference text (built-in ``general`` BoolQ passages, reference split);
perplexity is measured on the dev split (``--eval-split test`` for a configuration fixed on dev)
with a fixed token budget, so every model is scored on exactly the same tokens.

    python benchmarks/compression_results.py --n-reference 64 --n-eval 32 --max-length 128 \
        --output runs/compression_results.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_sparc import data as assets
from hf_sparc.reports.render import provenance
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
    parser.add_argument("--scopes", nargs="+", default=list(COMPRESSION_SCOPES), choices=COMPRESSION_SCOPES)
    parser.add_argument("--signed-lrp", action="store_true", help="rank signed R instead of sum |R|")
    parser.add_argument("--objective", default="next_token", help="what the LRP methods explain")
    parser.add_argument(
        "--eval-split", default="dev", choices=["dev", "test"], help="perplexity on this built-in split"
    )
    parser.add_argument("--output", default="runs/compression_results.json")
    parser.add_argument("--extend", help="an earlier output with the same settings: its rows come first")
    args = parser.parse_args()

    earlier = _earlier(args) if args.extend else None
    path = args.model or str(assets.default_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    reference = assets.builtin_dataset("general", "reference")[: args.n_reference]
    evaluation = assets.builtin_dataset("general", args.eval_split)[: args.n_eval]
    before, rows = compare_compression(
        model, tokenizer, reference, evaluation, sparsity=args.sparsity, methods=args.methods,
        scopes=args.scopes, absolute=not args.signed_lrp, objective=args.objective,
        max_length=args.max_length, max_tokens=args.n_eval * (args.max_length - 1),
    )  # fmt: skip
    rows = [r.to_dict() for r in rows]
    if earlier is not None:
        if earlier["perplexity_before"] != before:
            raise SystemExit(f"{args.extend} measured the unpruned model differently: not the same texts.")
        new = {(row["method"], row["scope"]) for row in rows}
        rows = [row for row in earlier["rows"] if (row["method"], row["scope"]) not in new] + rows
    print(f"unpruned perplexity {before:.3f}")
    for row in rows:
        print(f"{row['method']:14s} {row['scope']:7s} pruned {row['pruned']}/{row['total']} "
              f"perplexity {row['perplexity']:.3f}")  # fmt: skip
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    report = {
        **provenance(),
        "model": path,
        "settings": vars(args),
        "perplexity_before": before,
        "rows": rows,
        "extends": None if earlier is None else {"command": earlier.get("command"), "file": args.extend},
    }
    output.write_text(json.dumps(report, indent=2) + "\n")


def _earlier(args: argparse.Namespace) -> dict:
    """The output named by ``--extend``, refused before any work unless its settings are these."""
    earlier = json.loads(Path(args.extend).read_text())
    ignored = ("methods", "output", "extend")
    theirs = {k: v for k, v in earlier["settings"].items() if k not in ignored}
    ours = {k: v for k, v in vars(args).items() if k not in ignored}
    if theirs != ours:
        raise SystemExit(f"{args.extend} was run with other settings ({theirs}) than these ({ours}).")
    return earlier


if __name__ == "__main__":
    main()
