"""Helpers shared by the ``hf-sparc`` commands: model loading, atomic output folders, options."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from hf_sparc.attribution.signals import METHODS

DTYPES = ("float32", "bfloat16", "float16")
BATCH_SIZE, MAX_LENGTH = 8, 128
"""Defaults of ``--batch-size``/``--max-length`` outside the built-in behaviour experiment."""
SPEC_HELP = (
    "SPEC: a .txt/.jsonl/.csv file, a built-in (toxic-prompts, general, repetition-prompts, "
    "optionally :reference/:evaluation) or a datasets spec name[:config][:split][:column]"
)


class Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows defaults and keeps the layout of descriptions and epilogs."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        # A None default means "decided at run time"; the help text itself says how.
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def load_model(model: str, device: str = "cpu", dtype: str = "float32"):
    """Load ``(model, tokenizer)`` from a Hub id, a local folder or a built-in name, in eval mode."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_sparc.data.models import available_models, default_model_path

    path = str(default_model_path(model)) if model in available_models() else model
    tokenizer = AutoTokenizer.from_pretrained(path)
    loaded = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
    return loaded.to(device).eval(), tokenizer


def load_with_adapter(args: argparse.Namespace):
    """``load_model`` for ``args.model``, with ``args.adapter`` (if given) loaded through PEFT."""
    model, tokenizer = load_model(args.model, args.device, args.dtype)
    if getattr(args, "adapter", None):
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, args.adapter).eval()
    return model, tokenizer


class Output:
    """A folder that appears at ``target`` only when the run succeeded (temp folder + rename).

    Write into ``work``; call ``commit()`` at the very end, ``discard()`` on failure.
    """

    def __init__(self, target: str | Path, overwrite: bool) -> None:
        self.target = Path(target)
        if (
            self.target.exists()
            and (not self.target.is_dir() or any(self.target.iterdir()))
            and not overwrite
        ):
            raise FileExistsError(f"{target} exists and is not empty; pass --overwrite to replace it.")
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.work = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.", dir=self.target.parent))

    def commit(self) -> None:
        old = None
        if self.target.exists():
            old = self.target.with_name(f".{self.target.name}.old-{os.getpid()}")
            os.replace(self.target, old)
        os.replace(self.work, self.target)
        if old is not None:
            shutil.rmtree(old) if old.is_dir() else old.unlink()

    def discard(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)

    def __enter__(self) -> Output:
        return self

    def __exit__(self, error_type, error, traceback) -> None:
        # Commit only when the block finished; any exception (even KeyboardInterrupt) discards.
        if error_type is None:
            self.commit()
        else:
            self.discard()


def write_report(folder: Path, report: dict[str, Any]) -> None:
    """``report.md`` and ``report.json``; the JSON is the success marker, so write it last."""
    from hf_sparc.reports.markdown import render_markdown

    (folder / "report.md").write_text(render_markdown(report))
    (folder / "report.json").write_text(json.dumps(report, indent=2) + "\n")


def evaluation_perplexity(model, tokenizer, spec: str | None, args: argparse.Namespace) -> float | None:
    """Perplexity on the texts of ``spec`` (evaluation split of built-ins), or None without a spec."""
    if spec is None:
        return None
    from hf_sparc.data.sources import load_texts, plain_texts
    from hf_sparc.metrics import perplexity

    texts = plain_texts(load_texts(spec, default_split="evaluation"))
    return perplexity(
        model,
        tokenizer,
        texts,
        max_length=args.max_length or MAX_LENGTH,
        batch_size=args.batch_size or BATCH_SIZE,
    )


def add_model_options(
    parser: argparse.ArgumentParser, required: bool = True, experiment: bool = False
) -> None:
    """``--model/--device/--dtype/--batch-size/--max-length``.

    ``experiment``: the command can also run a built-in behaviour experiment, whose own sizes
    (``CorrectionSettings``) apply when ``--batch-size``/``--max-length`` are not given.
    """
    parser.add_argument(
        "--model", required=required, help="Hub id, local folder, or built-in name (smollm2-135m-instruct)"
    )
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1")
    parser.add_argument("--dtype", default="float32", choices=DTYPES, help="weights dtype")
    if experiment:
        from hf_sparc.workflows.correction import CorrectionSettings

        batch, length = None, None
        batch_help = f"texts per pass (default {BATCH_SIZE}; with --behavior {CorrectionSettings.batch_size})"
        length_help = (
            f"tokens per text (default {MAX_LENGTH}; with --behavior {CorrectionSettings.max_length})"
        )
    else:
        batch, length = BATCH_SIZE, MAX_LENGTH
        batch_help, length_help = "texts per forward/backward pass", "tokens per text (longer: truncated)"
    parser.add_argument("--batch-size", type=int, default=batch, help=batch_help)
    parser.add_argument("--max-length", type=int, default=length, help=length_help)


def add_attribution_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", default="lrp", choices=list(METHODS), help="attribution method")
    parser.add_argument(
        "--level", default="neuron", choices=["neuron", "head", "weight"], help="what to prune"
    )
    parser.add_argument("--target-modules", nargs="+", default=None, help="module name suffixes")
    parser.add_argument("--absolute", action="store_true", help="sum |R| over tokens instead of signed R")
    parser.add_argument("--seed", type=int, default=0, help="seed (random method, data splits)")


def add_scaling_options(parser: argparse.ArgumentParser) -> None:
    """``--gradient-checkpointing/--checkpoint-dir/--checkpoint-every`` (see README, Scaling);
    pass them on with :func:`scaling_options`."""
    group = parser.add_argument_group("scaling")
    group.add_argument(
        "--gradient-checkpointing", action="store_true", help="recompute activations in backward: less memory"
    )
    group.add_argument("--checkpoint-dir", default=None, help="save attribution state there; rerun to resume")
    group.add_argument("--checkpoint-every", type=int, default=10, help="batches between two state saves")


def scaling_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of :func:`hf_sparc.attribute` / ``SparcConfig`` set by
    :func:`add_scaling_options`."""
    return {
        "gradient_checkpointing": args.gradient_checkpointing,
        "checkpoint_dir": args.checkpoint_dir,
        "checkpoint_every": args.checkpoint_every,
    }


def add_amount_options(parser: argparse.ArgumentParser, default_count: int | None) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--count", type=int, default=default_count, help="components to prune")
    group.add_argument("--fraction", type=float, default=None, help="share of components to prune")


def add_output_options(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--output", required=True, help=what)
    parser.add_argument("--overwrite", action="store_true", help="replace existing output")


def pruning_report(pruner, model_name: str, before, after, references: dict[str, Any]) -> dict[str, Any]:
    """The report of a pruning run: config, references, what was cut and metrics before/after."""
    masks = pruner.masks
    summary = masks.summary()
    return {
        "model": model_name,
        "config": pruner.config.to_dict(),
        "references": references,
        "pruned": summary.pruned,
        "total": summary.total,
        "fraction": summary.fraction,
        "per_module": {row.module: row.pruned for row in summary.rows if row.pruned},
        "rule": masks.rule,
        "metrics_before": before,
        "metrics_after": after,
    }


def save_pruning_run(folder: Path, pruner, peft_model, report: dict[str, Any]) -> None:
    """Adapter, pruner state (config + relevance) and report into ``folder``."""
    from hf_sparc.tuner.export import save_adapter

    save_adapter(peft_model, folder, overwrite=True, metrics=report.get("metrics_after"))
    pruner.save_pretrained(folder)
    write_report(folder, report)
