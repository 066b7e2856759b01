"""Shared helpers for the benchmark scripts: models, batches, peak memory in a fresh process."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

import torch
from transformers import AutoModelForCausalLM, LlamaConfig

# SmolLM2-135M's shape: the default real model, as a random-init stand-in.
SMOLLM2_SHAPE = dict(
    vocab_size=49152,
    hidden_size=576,
    intermediate_size=1536,
    num_hidden_layers=30,
    num_attention_heads=9,
    num_key_value_heads=3,
    max_position_embeddings=2048,
    tie_word_embeddings=True,
)


def load_model(path: str | None):
    """A local model folder, or a random-init model with SmolLM2-135M's shape."""
    if path:
        model = AutoModelForCausalLM.from_pretrained(path).eval()
        # Weights are memory-mapped: read them once so that page-ins do not count as growth later.
        with torch.no_grad():
            sum(float(p.sum()) for p in model.parameters())
        return model
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(LlamaConfig(**SMOLLM2_SHAPE)).eval()


def random_texts(n: int, length: int, vocab: int, seed: int = 0) -> list[dict[str, list[int]]]:
    """Pre-tokenized random texts (the content does not change the cost)."""
    generator = torch.Generator().manual_seed(seed)
    return [{"input_ids": ids} for ids in torch.randint(10, vocab, (n, length), generator=generator).tolist()]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn, repeats: int, warm_up: bool = True) -> dict[str, float]:
    """Mean seconds per call: ``cpu`` (this process's CPU time) and ``wall``.

    On a shared machine, CPU time with a fixed thread count is the stable figure: other
    processes stretch wall time but not the work done by this one.
    """
    if warm_up:
        fn()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        fn()
    return {"wall": (time.perf_counter() - wall) / repeats, "cpu": (time.process_time() - cpu) / repeats}


def run_isolated(script: str, case: str, args: list[str]) -> dict:
    """Run ``script --case CASE`` in a fresh interpreter (clean peak-RSS) and parse its JSON line.

    glibc's malloc raises its mmap threshold as large blocks are freed, after which freed tensors
    stay in the heap: peak RSS then measures fragmentation (it doubled some peaks here), not live
    tensors. A fixed threshold returns every large block to the OS when it is freed.
    """
    env = {"MALLOC_MMAP_THRESHOLD_": "65536", **os.environ}
    out = subprocess.run(
        [sys.executable, script, "--case", case, *args], check=True, capture_output=True, text=True, env=env
    ).stdout
    return json.loads(out.strip().splitlines()[-1])
