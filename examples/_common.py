"""Shared plumbing of the example scripts (argument parsing, model loading, the correction flow).

Not part of the hf_sparc API: the scripts next to this file import it as ``_common`` (Python puts
a script's own folder first on ``sys.path``). ``run_correction`` is the Python-API path of a
behaviour correction, used by ``detoxify.py`` and ``reduce_repetition.py``; each script only
says which behaviour, which prompts, which metric and what to prune.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import hf_sparc
from hf_sparc.data import DEFAULT_MODEL, available_models, builtin_dataset, default_model_path
from hf_sparc.workflows.correction import CorrectionSettings

Measure = Callable[..., dict[str, float]]


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show defaults in ``--help`` and keep the module docstring's line breaks."""


def make_parser(
    description: str | None, prog: str | None = None, model_default: str | None = DEFAULT_MODEL
) -> argparse.ArgumentParser:
    """A parser with the options every example shares: ``--model`` and ``--device``.

    ``model_default=None``: the script picks the model itself (its ``--help`` says how).
    """
    parser = argparse.ArgumentParser(prog=prog, description=description, formatter_class=HelpFormatter)
    parser.add_argument(
        "--model",
        default=model_default,
        help=f"built-in model ({', '.join(available_models())}) or a local Hugging Face model folder"
        + ("" if model_default else f"; default: the run folder's base model, else {DEFAULT_MODEL}"),
    )
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    return parser


def model_path(name: str) -> Path:
    """Folder of ``name``: a local folder as is, a built-in name converted/cached once (offline)."""
    if Path(name).is_dir():
        return Path(name)
    if name in available_models():
        return default_model_path(name)
    raise SystemExit(
        f"--model {name!r} is neither a local folder nor a built-in model ({', '.join(available_models())})."
    )


def load_model(name: str, device: str = "cpu"):
    """``(model, tokenizer, path)``: the model in eval mode, float32, on ``device``."""
    path = model_path(name)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(device).eval()
    return model, tokenizer, path


def check_output(parser: argparse.ArgumentParser, folder: str, overwrite: bool) -> Path:
    """Refuse (before any work is done) to replace an adapter already in ``folder``."""
    path = Path(folder)
    if (path / "adapter_config.json").exists() and not overwrite:
        parser.error(f"{path} already holds an adapter; pass --overwrite or choose another --output.")
    return path


def same_logits(model_a, model_b, tokenizer, texts: list[str]) -> bool:
    """Whether two models give the same logits on each of ``texts`` (no padding involved).

    Same up to float32 rounding (rtol = atol = 1e-5): two instances with bit-identical weights
    and masks can differ in the last bits on CPU (seen: 4e-7 on one row of a batch, in some
    runs), while a lost or misapplied mask moves the logits by orders of magnitude more.
    """
    device = next(model_a.parameters()).device
    with torch.no_grad():
        for text in texts:
            ids = tokenizer(text, return_tensors="pt")["input_ids"].to(device)
            if not torch.allclose(model_a(ids).logits, model_b(ids).logits, rtol=1e-5, atol=1e-5):
                return False
    return True


def print_table(before: dict[str, float], after: dict[str, float], notes: dict[str, str]) -> None:
    """Markdown table of the metrics before and after pruning, with the relative change."""
    print("\n| metric | before | after | change | |")
    print("|---|---:|---:|---:|---|")
    for key, value in before.items():
        change = f"{(after[key] - value) / value:+.1%}" if value else "n/a"
        print(f"| {key} | {value:.4f} | {after[key]:.4f} | {change} | {notes.get(key, '')} |")
    print()


# -- behaviour correction (detoxify.py, reduce_repetition.py) ----------------------------------------
@dataclass(frozen=True)
class Behavior:
    """What a correction script removes and how it is measured.

    Attributes:
        name: ``"toxicity"`` or ``"repetition"`` (``hf_sparc.behavior_references(behavior=...)``).
        prompts: Built-in dataset of prompts: its reference split gives the candidates for the
            undesired references, its evaluation split the held-out prompts.
        measure: ``measure(model, tokenizer, prompts, max_new_tokens=..., batch_size=...)`` ->
            metric name -> value, on greedy continuations.
        notes: Metric name -> how to read it (e.g. ``"lower is better"``), for the table.
    """

    name: str
    prompts: str
    measure: Measure
    notes: dict[str, str]


def add_correction_arguments(
    parser: argparse.ArgumentParser,
    *,
    count: int | None,
    threshold: float,
    threshold_help: str,
    output: str,
    fraction: float | None = None,
    level: str = "neuron",
    focus: str,
) -> None:
    """Options of a correction run; sizes default to ``hf_sparc.workflows.correction.CorrectionSettings``'s
    (sized for a 2-core CPU and SmolLM2-135M, as in ``examples/demo.py``)."""
    sizes = CorrectionSettings()
    amount = parser.add_mutually_exclusive_group()
    amount.add_argument("--count", type=int, default=count, help="components (of --level) to prune")
    if fraction is not None:
        amount.add_argument(
            "--fraction", type=float, default=fraction, help="share of the scored components to prune"
        )
    parser.add_argument("--level", default=level, choices=["neuron", "head", "weight"], help="what to prune")
    parser.add_argument(
        "--candidates", type=int, default=sizes.n_candidates, help="candidate prompts continued"
    )
    parser.add_argument("--threshold", type=float, default=threshold, help=threshold_help)
    parser.add_argument(
        "--focus",
        default=focus,
        choices=["words", "continuation"],
        help="explain only the undesired words of each continuation (hf_sparc.focus_on_words) "
        "or all of its tokens",
    )
    parser.add_argument(
        "--general", type=int, default=sizes.n_general, help="general reference texts attributed"
    )
    parser.add_argument(
        "--eval-prompts", type=int, default=sizes.n_eval_prompts, help="held-out prompts for the behaviour"
    )
    parser.add_argument(
        "--eval-texts", type=int, default=sizes.n_eval_texts, help="held-out general texts for perplexity"
    )
    parser.add_argument(
        "--max-new-tokens", type=int, default=sizes.max_new_tokens, help="tokens generated per prompt"
    )
    parser.add_argument(
        "--max-length", type=int, default=sizes.max_length, help="tokens per text (attribution, perplexity)"
    )
    parser.add_argument("--batch-size", type=int, default=sizes.batch_size, help="texts per forward pass")
    parser.add_argument(
        "--absolute",
        action="store_true",
        help="sum |R| over tokens instead of signed relevance (paper Eq. 1, the default)",
    )
    parser.add_argument(
        "--protect-general",
        type=float,
        default=sizes.protect_general,
        help="share of units with the largest general relevance that are never cut (0 = plain Eq. 7)",
    )
    parser.add_argument("--output", default=output, help="folder for the adapter")
    parser.add_argument("--overwrite", action="store_true", help="replace an adapter already in --output")


def evaluate(model, tokenizer, behavior: Behavior, prompts, texts, args) -> dict[str, float]:
    """The behaviour metric on ``prompts`` and perplexity on ``texts``."""
    row = behavior.measure(
        model, tokenizer, prompts, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size
    )
    row["perplexity"] = hf_sparc.metrics.perplexity(
        model, tokenizer, texts, max_length=args.max_length, batch_size=args.batch_size, progress=False
    )
    return row


def run_correction(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    behavior: Behavior,
    target_modules: Callable[[torch.nn.Module], list[str] | None] = lambda model: None,
) -> dict[str, Any]:
    """References from the model's own behaviour -> LRP -> contrastive cut -> measure -> save.

    ``target_modules(model)`` names the modules to attribute and prune (``None``: hf_sparc's
    default for ``args.level``). Returns what was done and measured, as printed.
    """
    output = check_output(parser, args.output, args.overwrite)
    model, tokenizer, path = load_model(args.model, args.device)
    print(f"model: {path}")

    # 1. Undesired references: the model's own greedy continuations that show the behaviour.
    candidates = builtin_dataset(behavior.prompts, "reference")[: args.candidates]
    references = hf_sparc.behavior_references(
        model,
        tokenizer,
        candidates,
        behavior=behavior.name,
        threshold=args.threshold,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
    )
    print(f"undesired references: {references.n_kept} of {references.n_candidates} continuations")
    if not references:
        raise SystemExit(
            f"No continuation passed --threshold {args.threshold}: nothing to attribute. Try more "
            "--candidates or a looser --threshold."
        )
    if args.focus == "words":
        references = hf_sparc.focus_on_words(references)
        print(f"explaining {references.n_kept} undesired words of {references.n_continuations} continuations")
        if not references:
            raise SystemExit("No continuation has an undesired word by itself; use --focus continuation.")
    general = builtin_dataset("general", "reference")[: args.general]

    # 2. LRP relevance of every component on both reference sets (only continuation tokens of the
    #    undesired pairs are explained), 3. cut the most behaviour-specific ones (paper Eq. 7).
    settings = dict(
        tokenizer=tokenizer,
        method="lrp",
        level=args.level,
        target_modules=target_modules(model),
        max_length=args.max_length,
        batch_size=max(1, args.batch_size // 2),  # a backward pass needs more memory
        absolute=args.absolute,
    )
    # a reference is a prompt plus up to --max-new-tokens generated tokens: room for the whole prompt
    rel_undesired = hf_sparc.attribute(
        model, references, **{**settings, "max_length": args.max_length + args.max_new_tokens}
    )
    rel_general = hf_sparc.attribute(model, general, **settings)
    fraction = getattr(args, "fraction", None) if args.count is None else None
    masks = hf_sparc.select_contrastive(
        undesired=rel_undesired,
        general=rel_general,
        count=args.count,
        fraction=fraction,
        protect_general=args.protect_general,
    )
    print(f"pruning {masks.total()} of {masks.size()} {args.level}s:\n{masks.summary()}")

    # 4. Measure on held-out data, before and after, and save the cut as a mask adapter.
    eval_prompts = builtin_dataset(behavior.prompts, "evaluation")[: args.eval_prompts]
    eval_texts = builtin_dataset("general", "evaluation")[: args.eval_texts]
    before = evaluate(model, tokenizer, behavior, eval_prompts, eval_texts, args)
    peft_model = hf_sparc.apply_masks(model, masks, adapter_name=behavior.name)
    after = evaluate(peft_model, tokenizer, behavior, eval_prompts, eval_texts, args)
    print_table(before, after, behavior.notes)
    hf_sparc.save_adapter(
        peft_model,
        output,
        overwrite=args.overwrite,
        metrics={f"{key} (after)": value for key, value in after.items()},
        reference_data=(
            f"{references.n_continuations} own {behavior.name} continuations of built-in {behavior.prompts} "
            f"prompts (threshold {references.threshold}, explained: {references.focus}) vs {len(general)} "
            "built-in general texts"
        ),
    )
    print(
        f"adapter saved to {output}; after `import hf_sparc`, AutoModelForCausalLM.from_pretrained() loads it"
    )
    return {
        "model": str(path),
        "references": references.summary(),
        "level": masks.level,
        "pruned": masks.total(),
        "of": masks.size(),
        "before": before,
        "after": after,
        "adapter": str(output),
        "peft_model": peft_model,
        "tokenizer": tokenizer,
    }
