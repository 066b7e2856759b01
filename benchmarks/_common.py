"""Shared helpers for the benchmark scripts: models, batches, peak memory in a fresh process, and
the set-up and measurement of the toxicity experiments."""

from __future__ import annotations

import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

import hf_sparc
from hf_sparc.behaviors import focus_on_words, get_behavior, mean_outcomes
from hf_sparc.data import builtin_dataset, default_model_path
from hf_sparc.metrics import perplexity
from hf_sparc.workflows.correction import CorrectionSettings

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
    """Max RSS of this process in MiB. It is at least the parent's RSS when this process was
    forked (Linux carries the high-water mark across exec): parents of measured runs hold no model."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


_RUN_KIND = "HF_SPARC_BENCHMARK_RUN"  # set by run_isolated: "time" or "memory"


def timed(fn, repeats: int, warm_up: bool = True) -> dict[str, float]:
    """Mean seconds per call: ``cpu`` (this process's CPU time) and ``wall``.

    On a shared machine, CPU time with a fixed thread count is the stable figure: other
    processes stretch wall time but not the work done by this one.
    """
    if os.environ.get(_RUN_KIND) == "memory":  # run_isolated's peak-memory run: one call is enough
        fn()
        return {"wall": math.nan, "cpu": math.nan}
    if warm_up:
        fn()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        fn()
    return {"wall": (time.perf_counter() - wall) / repeats, "cpu": (time.process_time() - cpu) / repeats}


def run_isolated(script: str, case: str, args: list[str]) -> dict:
    """Run ``script --case CASE`` in two fresh interpreters and merge their JSON lines: everything
    from a run with glibc's default malloc except ``peak_mb``, which comes from a run with a fixed
    mmap threshold.

    glibc's malloc raises its mmap threshold as large blocks are freed, after which freed tensors
    stay in the heap: peak RSS then measures fragmentation (it doubled some peaks here), not live
    tensors. A fixed threshold returns every large block to the OS when it is freed, but then each
    large allocation faults in fresh zeroed pages, which inflates times (LRP neuron level on the
    SmolLM2 shape: 6.1 s instead of 3.0 s) — so each figure comes from the run that measures it.
    """
    command = [sys.executable, script, "--case", case, *args]

    def run(env: dict) -> dict:
        out = subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout
        return json.loads(out.strip().splitlines()[-1])

    timed_run = run({**os.environ, _RUN_KIND: "time"})
    memory_run = run({"MALLOC_MMAP_THRESHOLD_": "65536", **os.environ, _RUN_KIND: "memory"})
    return {**timed_run, "peak_mb": memory_run["peak_mb"]}


def add_toxicity_arguments(parser) -> None:
    """Model, reference and held-out evaluation options shared by the toxicity experiments."""
    sizes = CorrectionSettings()
    parser.add_argument("--model", default="smollm2-135m-instruct", help="built-in name or local folder")
    parser.add_argument("--candidates", type=int, default=sizes.n_candidates)
    parser.add_argument("--threshold", type=float, default=sizes.threshold)
    parser.add_argument("--general", type=int, default=sizes.n_general)
    parser.add_argument(
        "--split",
        default=sizes.split,
        choices=["dev", "test"],
        help="held-out split of prompts and texts: choices on dev; test only for a fixed configuration",
    )
    parser.add_argument("--eval-prompts", type=int, default=sizes.n_eval_prompts)
    parser.add_argument(
        "--eval-skip", type=int, default=0, help="skip this many prompts of the held-out split"
    )
    parser.add_argument("--eval-texts", type=int, default=sizes.n_eval_texts)
    parser.add_argument("--max-new-tokens", type=int, default=sizes.max_new_tokens)
    parser.add_argument("--max-length", type=int, default=sizes.max_length)
    parser.add_argument("--output", default=None, help="optional JSON file for the results")


class ToxicityExperiment:
    """The model, its reference sets and the held-out measurement named by ``add_toxicity_arguments``;
    data and metric from the registered toxicity behaviour (``hf_sparc.behaviors``)."""

    behavior = get_behavior("toxicity")

    def __init__(self, args) -> None:
        self.args = args
        path = Path(args.model) if Path(args.model).is_dir() else default_model_path(args.model)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForCausalLM.from_pretrained(path).eval()
        self.candidates = self.behavior.candidates("reference")[: args.candidates]
        self.general = builtin_dataset("general", "reference")[: args.general]
        held_out = self.behavior.candidates(args.split)
        self.prompts = held_out[args.eval_skip : args.eval_skip + args.eval_prompts]
        self.texts = builtin_dataset("general", args.split)[: args.eval_texts]

    def references(self, model, focus: str):
        """The pairs where ``model`` writes toxic text; ``focus="words"``: one per toxic word."""
        found = hf_sparc.behavior_references(
            model,
            self.tokenizer,
            self.candidates,
            behavior=self.behavior.name,
            threshold=self.args.threshold,
            max_new_tokens=self.args.max_new_tokens,
            progress=False,
        )
        return focus_on_words(found) if focus == "words" else found

    def pruner(self, model, references, **config) -> hf_sparc.SparcPruner:
        """A pruner fitted on ``model`` with ``references`` against the general texts (Eq. 7);
        ``config``: more ``SparcConfig`` fields (``count``, ``protect_general``, ...)."""
        a = self.args
        settings = hf_sparc.SparcConfig(
            max_length=a.max_length,
            # references are prompt + up to max_new_tokens generated tokens: room for the whole prompt
            undesired_max_length=a.max_length + a.max_new_tokens,
            **config,
        )
        return hf_sparc.SparcPruner(settings).fit(
            model, self.tokenizer, undesired=list(references), general=self.general
        )

    def measure(self, model) -> dict[str, float]:
        """The toxicity behaviour's headline metric (toxic rate) on the held-out prompts,
        perplexity on the held-out texts."""
        a, metric = self.args, self.behavior.metric.name
        measured = self.behavior.measure(
            model, self.tokenizer, self.prompts, max_new_tokens=a.max_new_tokens, batch_size=8, scorer=None
        )
        return {
            metric: mean_outcomes(measured)[metric],
            "perplexity": perplexity(
                model, self.tokenizer, self.texts, max_length=a.max_length, progress=False
            ),
        }


def print_deltas(label: str, rows: dict[str, dict[str, float]], base: dict[str, float]) -> None:
    """Toxic rate and perplexity of each row with the change against ``base``."""
    print(f"{label:<52}{'toxic rate':>12}{'Δ':>9}{'perplexity':>12}{'Δ':>9}")
    for name, row in rows.items():
        deltas = [(row[k] - base[k]) / base[k] if base[k] else 0.0 for k in ("toxic_rate", "perplexity")]
        print(
            f"{name:<52}{row['toxic_rate']:>12.4f}{deltas[0]:>9.1%}{row['perplexity']:>12.2f}{deltas[1]:>9.1%}"
        )
