"""What a SPARC adapter costs at use time: generation speed, file size, load time.

    python benchmarks/adapter_cost.py                     # random-init model of SmolLM2-135M's shape
    python benchmarks/adapter_cost.py --model builtin --record docs/results/adapter_cost.json

Masks prune ``--count`` MLP neurons chosen from random relevance (costs do not depend on which).
Targets (issue "From 135M to 7B"): greedy generation with the adapter active ≥ 0.98× the base
model's tokens/s at batch 1 and 8 with 100 / 1,000 / 10,000 neurons (active neuron masks live in the
weights during inference: hf_sparc.tuner.in_weights); adapter bytes ≤ 8 per pruned unit + 4 KB;
``PeftModel.from_pretrained`` time on top of the base load. Forward overhead of unmerged weight
masks: ``benchmarks/adapter_overhead.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

sys.path.insert(0, os.path.dirname(__file__))
from _common import load_model
from adapter_overhead import random_relevance

import hf_sparc


def tokens_per_second(models: dict[str, torch.nn.Module], prompt: torch.Tensor, new: int, repeats: int):
    """Greedy-generation tokens per CPU second of each model (median; round-robin, so that drift on a
    shared machine hits all alike)."""
    times: dict[str, list[float]] = {name: [] for name in models}
    kwargs = dict(max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=0)
    for model in models.values():
        model.generate(prompt, **kwargs)  # warm-up
    for _ in range(repeats):
        for name, model in models.items():
            start = time.process_time()
            model.generate(prompt, **kwargs)
            times[name].append(time.process_time() - start)
    return {name: new / statistics.median(values) for name, values in times.items()}


def load_seconds(base_dir: str, adapter_dir: str | None, repeats: int) -> float:
    """Median CPU seconds to load the base model (and the adapter on top when given), after one
    unmeasured load (first-call imports and file caching)."""
    values = []
    for _ in range(repeats + 1):
        start = time.process_time()
        model = AutoModelForCausalLM.from_pretrained(base_dir)
        if adapter_dir is not None:
            PeftModel.from_pretrained(model, adapter_dir)
        values.append(time.process_time() - start)
    return statistics.median(values[1:])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=None, help="local model folder, 'builtin' (default: random)")
    parser.add_argument("--count", type=int, nargs="+", default=[100, 1000, 10000], help="pruned neurons")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8], help="generation batch sizes")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--record", default=None, help="write the rows as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.model == "builtin":
        from hf_sparc.data import default_model_path

        args.model = str(default_model_path())
    model = load_model(args.model)
    relevance = random_relevance(model, "neuron")
    prompts = {
        batch: torch.randint(
            10, model.config.vocab_size, (batch, 16), generator=torch.Generator().manual_seed(0)
        )
        for batch in args.batch
    }
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        base_dir = args.model or str(Path(folder, "base"))
        if args.model is None:
            model.save_pretrained(base_dir)
        print(f"torch {torch.__version__}, {args.threads} thread(s), model {args.model or 'random'}")
        columns = (("neurons", 8), ("batch", 6), ("bytes", 8), ("limit", 8), ("tok/s", 8), ("adapter", 9))
        columns += (("ratio", 7), ("load +s", 9))
        print("".join(f"{name:>{width}}" for name, width in columns))
        base_load = load_seconds(base_dir, None, args.repeats)
        for count in args.count:
            masks = hf_sparc.select(relevance, count=count)
            adapter_dir = str(Path(folder, f"adapter-{count}"))
            peft_model = hf_sparc.apply_masks(load_model(args.model), masks)
            hf_sparc.save_adapter(peft_model, adapter_dir)
            size = sum(p.stat().st_size for p in Path(adapter_dir).iterdir() if p.name != "README.md")
            extra = load_seconds(base_dir, adapter_dir, args.repeats) - base_load
            for batch, prompt in prompts.items():
                speed = tokens_per_second(
                    {"base": model, "adapter": peft_model}, prompt, args.new_tokens, args.repeats
                )
                row = {"neurons": count, "modules": len(masks), "batch": batch, "bytes": size,
                       "limit": 8 * count + 4096, "base_tokens_per_s": speed["base"] * batch,
                       "adapter_tokens_per_s": speed["adapter"] * batch,
                       "ratio": speed["adapter"] / speed["base"], "load_extra_s": extra}  # fmt: skip
                rows.append(row)
                print(
                    f"{count:>8}{batch:>6}{size:>8}{row['limit']:>8}{row['base_tokens_per_s']:>8.1f}"
                    f"{row['adapter_tokens_per_s']:>9.1f}{row['ratio']:>7.3f}{extra:>9.3f}"
                )
    print("bytes: adapter_model.safetensors + adapter_config.json (the model card README.md excluded)")
    if args.record:
        from hf_sparc.reports.render import provenance

        record = {**provenance(), "model": args.model or "random SmolLM2-135M shape", "threads": args.threads,
                  "new_tokens": args.new_tokens, "repeats": args.repeats, "rows": rows}  # fmt: skip
        Path(args.record).write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
