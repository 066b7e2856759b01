"""Helpers shared by the ``hf-sparc`` commands: model loading, options, and the run folder.

Re-exported for the commands: ``Output`` (:class:`hf_sparc._files.AtomicFolder`, the atomic run
folder), ``pruning_report`` and ``write_report`` (the pruning-run report,
:mod:`hf_sparc.reports.pruning`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from hf_sparc._files import AtomicFolder as Output
from hf_sparc.attribution.objectives import OBJECTIVES
from hf_sparc.attribution.signals import METHODS
from hf_sparc.data.models import available_models, default_model_path
from hf_sparc.data.sources import load_texts, plain_texts
from hf_sparc.metrics import perplexity
from hf_sparc.reports.pruning import pruning_report
from hf_sparc.reports.pruning import write_pruning_report as write_report
from hf_sparc.tuner.config import SparcAdapterConfig
from hf_sparc.tuner.io import save_adapter
from hf_sparc.workflows.correction import CorrectionSettings

__all__ = [
    "BATCH_SIZE",
    "MAX_LENGTH",
    "SPEC_HELP",
    "Formatter",
    "Output",
    "add_amount_options",
    "add_attribution_options",
    "add_model_options",
    "add_output_options",
    "add_scaling_options",
    "evaluation_perplexity",
    "evaluation_texts",
    "load_adapter",
    "load_model",
    "load_with_adapter",
    "loading_options",
    "pruning_report",
    "save_pruning_run",
    "scaling_options",
    "write_report",
]

DTYPES = ("float32", "bfloat16", "float16", "auto")
BATCH_SIZE, MAX_LENGTH = 8, 128
"""Defaults of ``--batch-size``/``--max-length`` outside the built-in behaviour experiment."""
SPEC_HELP = (
    "SPEC: a .txt/.jsonl/.csv/.json/.parquet file, a built-in (toxic-prompts, general, "
    "repetition-prompts, optionally :reference/:dev/:test/:all; choices are made on dev, test is for "
    "final reports) or a datasets spec name[:config][:split][:column]; splits slice as in datasets "
    "(general:dev[:200])"
)


class Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows defaults and keeps the layout of descriptions and epilogs."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        # A None default means "decided at run time"; the help text itself says how.
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def load_model(
    model: str,
    device: str = "cpu",
    dtype: str = "float32",
    *,
    device_map: str | None = None,
    revision: str | None = None,
    trust_remote_code: bool = False,
):
    """Load ``(model, tokenizer)`` from a Hub id, a local folder or a built-in name, in eval mode,
    as ``transformers`` would: ``dtype="auto"`` keeps the checkpoint's dtype, ``device_map``
    (e.g. ``"auto"``) places it with accelerate instead of moving it to ``device``."""
    if model not in available_models() and model.startswith(("/", ".", "~")) and not Path(model).exists():
        raise FileNotFoundError(f"--model {model}: no such folder.")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = str(default_model_path(model)) if model in available_models() else model
    hub = {"revision": revision, "trust_remote_code": trust_remote_code}
    tokenizer = AutoTokenizer.from_pretrained(path, **hub)
    loaded = AutoModelForCausalLM.from_pretrained(
        path, dtype="auto" if dtype == "auto" else getattr(torch, dtype), device_map=device_map, **hub
    )
    return (loaded if device_map else loaded.to(device)).eval(), tokenizer


def loading_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of :func:`load_model` given by the model options of ``args``."""
    return {
        "device": args.device,
        "dtype": args.dtype,
        "device_map": getattr(args, "device_map", None),
        "revision": getattr(args, "revision", None),
        "trust_remote_code": getattr(args, "trust_remote_code", False),
    }


def load_with_adapter(args: argparse.Namespace):
    """``load_model`` for ``args.model``, with ``args.adapter`` (if given) loaded through PEFT."""
    model, tokenizer = load_model(args.model, **loading_options(args))
    if getattr(args, "adapter", None):
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, args.adapter).eval()
    return model, tokenizer


def load_adapter(adapter: str, model: str | None = None, **loading: Any):
    """``(peft_model, tokenizer, base model name)`` for the SPARC adapter folder ``adapter``.

    The adapter's config is read and checked once, before the base model is loaded (a wrong or
    damaged adapter fails fast), and handed to PEFT instead of being read again. ``model``
    overrides the base model the adapter names; ``loading``: as :func:`load_model`.
    """
    from peft import PeftModel

    if not Path(adapter, "adapter_config.json").is_file():
        raise FileNotFoundError(f"{adapter} holds no adapter_config.json.")
    config = SparcAdapterConfig.from_pretrained(adapter)
    base_name = model or config.base_model_name_or_path
    if not base_name:
        raise ValueError("The adapter does not name its base model; pass --model.")
    base, tokenizer = load_model(base_name, **loading)
    return PeftModel.from_pretrained(base, adapter, config=config).eval(), tokenizer, base_name


def evaluation_texts(spec: str | None) -> list[str] | None:
    """The texts of ``spec`` (dev split of built-ins unless it names one), or None without a spec;
    read before the model loads, so that a bad SPEC fails at once."""
    return None if spec is None else plain_texts(load_texts(spec, default_split="dev"))


def evaluation_perplexity(
    model, tokenizer, texts: list[str] | None, args: argparse.Namespace
) -> float | None:
    """Perplexity on ``texts`` (from :func:`evaluation_texts`), or None without texts."""
    if texts is None:
        return None
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
    parser.add_argument(
        "--dtype", default="float32", choices=DTYPES, help="weights dtype (auto: the checkpoint's)"
    )
    parser.add_argument(
        "--device-map", default=None, help="accelerate device map (e.g. auto) instead of --device"
    )
    parser.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit) of --model")
    parser.add_argument(
        "--trust-remote-code", action="store_true", help="allow the model's own code from the Hub"
    )
    if experiment:
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


def add_attribution_options(parser: argparse.ArgumentParser, extra_methods: tuple[str, ...] = ()) -> None:
    """``extra_methods``: selection methods beyond attribution that the command offers (``aura``)."""
    parser.add_argument(
        "--method",
        default="lrp",
        choices=[*METHODS, *extra_methods],
        help="attribution method"
        + (f" (or {', '.join(extra_methods)}: with --behavior)" if extra_methods else ""),
    )
    parser.add_argument(
        "--level", default="neuron", choices=["neuron", "head", "weight"], help="what to prune"
    )
    parser.add_argument("--target-modules", nargs="+", default=None, help="module name suffixes")
    parser.add_argument("--absolute", action="store_true", help="sum |R| over tokens instead of signed R")
    parser.add_argument(
        "--objective",
        default="next_token",
        choices=list(OBJECTIVES),
        help="what is explained (hf_sparc.attribution.objectives): the following tokens' logits, "
        "next_token_logprob their log-probabilities, ...",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed (random method, data splits)")


def add_scaling_options(parser: argparse.ArgumentParser) -> None:
    """``--gradient-checkpointing/--checkpoint-dir/--checkpoint-every/--max-memory`` (see README, Scaling);
    pass them on with :func:`scaling_options`."""
    group = parser.add_argument_group("scaling")
    group.add_argument(
        "--gradient-checkpointing", action="store_true", help="recompute activations in backward: less memory"
    )
    group.add_argument("--checkpoint-dir", default=None, help="save attribution state there; rerun to resume")
    group.add_argument("--checkpoint-every", type=int, default=10, help="batches between two state saves")
    group.add_argument(
        "--max-memory",
        default=None,
        help="memory budget of attribution, e.g. 8GB (plans accumulators/passes)",
    )


def scaling_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of :func:`hf_sparc.attribute` / ``SparcConfig`` set by
    :func:`add_scaling_options`."""
    return {
        "gradient_checkpointing": args.gradient_checkpointing,
        "checkpoint_dir": args.checkpoint_dir,
        "checkpoint_every": args.checkpoint_every,
        "max_memory": args.max_memory,
    }


def add_amount_options(parser: argparse.ArgumentParser, default_count: int | None) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--count", type=int, default=default_count, help="components to prune")
    group.add_argument("--fraction", type=float, default=None, help="share of components to prune")


def add_output_options(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--output", required=True, help=what)
    parser.add_argument("--overwrite", action="store_true", help="replace existing output")


def save_pruning_run(folder: Path, pruner, peft_model, report: dict[str, Any]) -> None:
    """Adapter, pruner state (config + relevance) and report into ``folder``."""
    save_adapter(peft_model, folder, overwrite=True, metrics=report.get("metrics_after"))
    pruner.save_pretrained(folder)
    write_report(folder, report)
