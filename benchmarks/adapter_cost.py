"""What a SPARC adapter costs at use time: generation speed, file size, load time.

    python benchmarks/adapter_cost.py                     # random-init model of SmolLM2-135M's shape
    python benchmarks/adapter_cost.py --model builtin     # the cached SmolLM2-135M-Instruct

Masks prune ``--count`` MLP neurons chosen from random relevance (costs do not depend on which).
Targets (issue "Performance and scale"): generation tokens/s with adapter / base ≥ 0.95; adapter
bytes ≤ 8 per pruned unit + 4 KB; ``PeftModel.from_pretrained`` time on top of the base load
≤ 0.2 s for 100 neurons. Forward overhead: ``benchmarks/adapter_overhead.py``.
"""

from __future__ import annotations

import argparse
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
    parser.add_argument("--count", type=int, nargs="+", default=[100, 1000], help="pruned neurons")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.model == "builtin":
        from hf_sparc.data import default_model_path

        args.model = str(default_model_path())
    model = load_model(args.model)
    relevance = random_relevance(model, "neuron")
    prompt = torch.randint(10, model.config.vocab_size, (1, 16), generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory() as folder:
        base_dir = args.model or str(Path(folder, "base"))
        if args.model is None:
            model.save_pretrained(base_dir)
        print(f"torch {torch.__version__}, {args.threads} thread(s), model {args.model or 'random'}")
        print(f"{'neurons':>8}{'bytes':>8}{'limit':>8}{'tok/s':>8}{'adapter':>9}{'ratio':>7}{'load +s':>9}")
        base_load = load_seconds(base_dir, None, args.repeats)
        for count in args.count:
            masks = hf_sparc.select(relevance, count=count)
            adapter_dir = str(Path(folder, f"adapter-{count}"))
            peft_model = hf_sparc.apply_masks(load_model(args.model), masks)
            hf_sparc.save_adapter(peft_model, adapter_dir)
            size = sum(p.stat().st_size for p in Path(adapter_dir).iterdir() if p.name != "README.md")
            speed = tokens_per_second(
                {"base": model, "adapter": peft_model}, prompt, args.new_tokens, args.repeats
            )
            extra = load_seconds(base_dir, adapter_dir, args.repeats) - base_load
            print(
                f"{count:>8}{size:>8}{8 * count + 4096:>8}{speed['base']:>8.1f}{speed['adapter']:>9.1f}"
                f"{speed['adapter'] / speed['base']:>7.3f}{extra:>9.3f}"
            )
    print("bytes: adapter_model.safetensors + adapter_config.json (the model card README.md excluded)")


if __name__ == "__main__":
    main()
