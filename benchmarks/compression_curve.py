"""Perplexity after 50% unstructured compression against the number of reference passages.

Runs of ``benchmarks/compression_results.py`` at several ``--n-reference`` (same model, sparsity,
evaluation passages and token budget) gathered into one record and one plot:

    for n in 64 256 1024; do python benchmarks/compression_results.py --n-reference $n --n-eval 32 \\
        --max-length 128 --methods lrp wanda --output runs/compression_$n.json; done
    python benchmarks/compression_curve.py runs/compression_64.json runs/compression_256.json \\
        runs/compression_1024.json --record docs/results/compression_curve.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hf_sparc.attribution import METHODS
from hf_sparc.reports.render import provenance
from hf_sparc.reports.writer import new_figure


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="+", help="JSON outputs of compression_results.py")
    parser.add_argument("--record", required=True, help="where to write the curve (JSON; PNG beside it)")
    args = parser.parse_args()
    runs = sorted(
        (json.loads(Path(p).read_text()) for p in args.runs), key=lambda r: r["settings"]["n_reference"]
    )
    before = {r["perplexity_before"] for r in runs}
    if len(before) != 1:
        raise SystemExit(
            f"the runs measured different unpruned perplexities {sorted(before)}: not comparable"
        )
    points = {}
    for run in runs:
        for row in run["rows"]:
            settings = run["settings"]
            point = {"n_reference": settings["n_reference"], "method": _label(row["method"], settings),
                     "scope": row["scope"], "perplexity": row["perplexity"],
                     "settings": settings}  # fmt: skip
            key = (point["n_reference"], point["method"], point["scope"])
            # a method run twice with the same references (Wanda beside each LRP objective) must agree
            if key in points and points[key]["perplexity"] != point["perplexity"]:
                raise SystemExit(f"{key} measured twice with different perplexities: not one configuration")
            points.setdefault(key, point)
    points = list(points.values())
    split = runs[0]["settings"].get("eval_split", "dev")
    figure, axis = new_figure(6, 4)
    for method, scope in sorted({(p["method"], p["scope"]) for p in points}):
        line = [p for p in points if (p["method"], p["scope"]) == (method, scope)]
        axis.plot([p["n_reference"] for p in line], [p["perplexity"] for p in line], marker="o",
                  label=f"{method} ({scope})")  # fmt: skip
    axis.axhline(before.pop(), color="grey", linestyle=":", label="unpruned")
    axis.set(xscale="log", yscale="log", xlabel="reference passages (×128 tokens)",
             ylabel=f"perplexity ({split})")  # fmt: skip
    axis.legend(fontsize=8)
    record = {**provenance(), "model": runs[0]["model"], "perplexity_before": runs[0]["perplexity_before"],
              "points": points}  # fmt: skip
    Path(args.record).write_text(json.dumps(record, indent=2) + "\n")
    figure.savefig(Path(args.record).with_suffix(".png"), dpi=120, bbox_inches="tight")
    for p in points:
        print(f"{p['n_reference']:>6} {p['method']:<28} {p['scope']:<7} {p['perplexity']:.3f}")


def _label(method: str, settings: dict) -> str:
    """The method, with what it explained when that is not the default (gradient methods only)."""
    objective = settings.get("objective", "next_token")
    plain = not METHODS[method].needs_gradient or objective == "next_token"
    return method if plain else f"{method} · {objective}"


if __name__ == "__main__":
    main()
