"""IOI circuit sizes per method on SmolLM2-135M-Instruct (docs/RESULTS.md, "IOI circuits").

For each level and method: rank units by relevance for the IO − S logit difference on the
reference IOI prompts, prune the least relevant progressively, and report the smallest kept set
whose accuracy on the dev prompts stays >= threshold x the unpruned accuracy.

    python benchmarks/circuit_results.py --n 96 --levels head neuron \
        --methods lrp gradient activation random --output runs/circuit_results.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_sparc import data as assets
from hf_sparc.data.tasks import ioi_dataset
from hf_sparc.reports.writer import write_files
from hf_sparc.workflows.circuits import curve_figure, discover_circuit

FRACTIONS = (0.2, 0.4, 0.6, 0.8, 0.9, 0.95, 0.98)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=None, help="model folder (default: the built-in SmolLM2)")
    parser.add_argument(
        "--n",
        type=int,
        default=96,
        help="IOI items: half reference, a quarter dev (the curve), a quarter test",
    )
    parser.add_argument("--levels", nargs="+", default=["head", "neuron"])
    parser.add_argument("--methods", nargs="+", default=["lrp", "gradient", "activation", "random"])
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--refine", type=int, default=3)
    parser.add_argument("--output", default="runs/circuit_results.json")
    args = parser.parse_args()

    path = args.model or str(assets.default_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    reference = ioi_dataset(tokenizer, n=args.n, split="reference")
    evaluation = ioi_dataset(tokenizer, n=args.n, split="dev")
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for level in args.levels:
        results = []
        for method in args.methods:
            result = discover_circuit(
                model, tokenizer, reference, evaluation, method=method, level=level,
                threshold=args.threshold, fractions=FRACTIONS, refine=args.refine, batch_size=16,
            )  # fmt: skip
            results.append(result)
            rows.append(result.to_dict())
            print(
                f"{level:7s} {method:10s} circuit {result.kept:6d} of {result.total} "
                f"({result.kept / result.total:.2%}) acc {result.circuit.accuracy:.3f} "
                f"(unpruned {result.baseline.accuracy:.3f})",
                flush=True,
            )
            # written after every run, so a long sweep can be read while it goes
            output.write_text(json.dumps({"model": path, "n": args.n, "results": rows}, indent=2) + "\n")
        write_files(output.parent, {f"{output.stem}_{level}.png": curve_figure(results)})


if __name__ == "__main__":
    main()
