"""Forward-pass cost of a SPARC adapter, unmerged and merged, relative to the base model.

    python benchmarks/adapter_overhead.py                      # tiny random Llama, all levels
    python benchmarks/adapter_overhead.py --model path/to/model --level neuron --fraction 0.01
    python benchmarks/adapter_overhead.py --model builtin --fraction 0.0003 --threads 1 \
        --record docs/results/adapter_overhead.json

Masks come from random relevance (timing does not depend on which units are pruned). Prints
median wall time per forward and the ratios unmerged/base and merged/base.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from transformers import AutoModelForCausalLM, LlamaConfig

import hf_sparc
from hf_sparc import Relevance, RelevanceInfo
from hf_sparc.architectures import geometry, get_architecture


def random_relevance(model: torch.nn.Module, level: str) -> Relevance:
    """Random scores for every MLP up projection (neuron/weight) or attention block (head)."""
    spec = get_architecture(model)
    n_layers = len(model.get_submodule(spec.layers))
    scores = {}
    for i in range(n_layers):
        if level == "head":
            scores[f"{spec.layers}.{i}.{spec.attention}"] = torch.rand(model.config.num_attention_heads)
            continue
        module = model.get_submodule(f"{spec.layers}.{i}.{spec.mlp_up}")
        scores[f"{spec.layers}.{i}.{spec.mlp_up}"] = torch.rand(geometry.unit_shape(level, module))
    return Relevance(scores, RelevanceInfo(method="random", level=level, n_samples=0, n_tokens=0))


def median_forward_seconds(
    models: dict[str, torch.nn.Module], ids: torch.Tensor, repeats: int
) -> dict[str, float]:
    """Median seconds per forward of each model, measured round-robin so that load drift on a
    shared machine hits all of them alike."""
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        for model in models.values():
            model(ids)  # warm-up
        for _ in range(repeats):
            for name, model in models.items():
                start = time.perf_counter()
                model(ids)
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="local model path, or 'builtin' (default: a small random Llama)")
    parser.add_argument("--hidden", type=int, default=256, help="hidden size of the random Llama")
    parser.add_argument("--level", choices=["neuron", "head", "weight", "all"], default="all")
    parser.add_argument("--fraction", type=float, default=0.01, help="share of components to prune")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=128, help="sequence length")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--record", default=None, help="also write the rows to this JSON file")
    args = parser.parse_args()
    if args.model == "builtin":
        from hf_sparc.data import default_model_path

        args.model = str(default_model_path())
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    if args.model:

        def load() -> torch.nn.Module:
            return AutoModelForCausalLM.from_pretrained(args.model).eval()

    else:
        config = LlamaConfig(
            hidden_size=args.hidden,
            intermediate_size=4 * args.hidden,
            num_hidden_layers=4,
            num_attention_heads=args.hidden // 32,
            num_key_value_heads=args.hidden // 64,
            vocab_size=1000,
        )
        state = AutoModelForCausalLM.from_config(config).state_dict()

        def load() -> torch.nn.Module:
            model = AutoModelForCausalLM.from_config(config).eval()
            model.load_state_dict(state)
            return model

    ids = torch.randint(0, load().config.vocab_size, (args.batch, args.tokens))
    levels = ["neuron", "head", "weight"] if args.level == "all" else [args.level]
    print(f"batch {args.batch} x {args.tokens} tokens, median of {args.repeats}")
    print(f"{'level':<8}{'pruned':>10}{'base ms':>10}{'unmerged':>11}{'merged':>10}")
    rows = []
    for level in levels:
        relevance = random_relevance(load(), level)
        masks = hf_sparc.select(relevance, count=max(1, round(args.fraction * relevance.numel())))
        merged = hf_sparc.apply_masks(load(), masks)
        merged.merge_adapter()
        models = {"base": load(), "unmerged": hf_sparc.apply_masks(load(), masks), "merged": merged}
        t = median_forward_seconds(models, ids, args.repeats)
        rows.append({"level": level, "pruned": masks.total(), "base_ms": 1000 * t["base"],
                     "unmerged": t["unmerged"] / t["base"], "merged": t["merged"] / t["base"]})  # fmt: skip
        print(
            f"{level:<8}{masks.total():>10}{1000 * t['base']:>10.2f}"
            f"{t['unmerged'] / t['base']:>10.3f}x{t['merged'] / t['base']:>9.3f}x"
        )
    if args.record:
        from hf_sparc.reports.render import provenance

        record = {**provenance(), "settings": {k: v for k, v in vars(args).items() if k != "record"},
                  "rows": rows}  # fmt: skip
        with open(args.record, "w") as file:
            file.write(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
