"""Shared plumbing of the example scripts (argument parsing, model loading, the correction flow).

Not part of the hf_sparc API: the scripts next to this file import it as ``_common`` (Python puts
a script's own folder first on ``sys.path``). ``run_correction`` is the Python-API path of a
behaviour correction, used by ``detoxify.py`` and ``reduce_repetition.py``; each script only
says which behaviour (its prompts and metrics come from ``hf_sparc.behaviors``) and what to prune.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import hf_sparc
from hf_sparc.behaviors import Behavior, get_behavior, mean_outcomes, own_references
from hf_sparc.data import DEFAULT_MODEL, available_models, builtin_dataset, default_model_path
from hf_sparc.workflows.correction import CorrectionSettings


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
        "--split",
        default=sizes.split,
        choices=["dev", "test"],
        help="held-out split measured on: dev while choosing options; test (locked) only for a "
        "configuration fixed beforehand",
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


def evaluate(model, tokenizer, behavior: Behavior, held_out, texts, args) -> dict[str, float]:
    """The behaviour's metrics on ``held_out`` and perplexity on ``texts``."""
    row = mean_outcomes(
        behavior.measure(
            model,
            tokenizer,
            held_out,
            max_new_tokens=args.max_new_tokens,
            batch_size=args.batch_size,
            scorer=None,
        )
    )
    row["perplexity"] = hf_sparc.metrics.perplexity(
        model, tokenizer, texts, max_length=args.max_length, batch_size=args.batch_size, progress=False
    )
    return row


def find_references(model, tokenizer, behavior: Behavior, args):
    """The model's own undesired references among ``--candidates`` built-in candidates, focused
    on the undesired words with ``--focus words``."""
    try:
        references = own_references(
            model, tokenizer, behavior.name, n_candidates=args.candidates, focus=args.focus,
            threshold=args.threshold, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
        )  # fmt: skip
    except ValueError as error:  # nothing to attribute: say which option to change
        raise SystemExit(f"{error} (--threshold, --candidates, --focus)") from None
    print(
        f"undesired references: {references.n_kept} ({references.focus}) from {references.n_continuations} "
        f"of {references.n_candidates} candidates"
    )
    return references


def run_correction(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    behavior_name: str,
    target_modules: Callable[[torch.nn.Module], list[str] | None] = lambda model: None,
) -> dict[str, Any]:
    """References from the model's own behaviour -> LRP -> contrastive cut -> measure -> save.

    ``behavior_name``: a key of ``hf_sparc.behaviors.BEHAVIORS``. ``target_modules(model)``
    names the modules to attribute and prune (``None``: hf_sparc's default for ``args.level``).
    Returns what was done and measured, as printed.
    """
    behavior = get_behavior(behavior_name)
    output = check_output(parser, args.output, args.overwrite)
    model, tokenizer, path = load_model(args.model, args.device)
    print(f"model: {path}")

    # 1. Undesired references: the model's own behaviour on built-in candidates.
    references = find_references(model, tokenizer, behavior, args)
    general = builtin_dataset("general", "reference")[: args.general]

    # 2. LRP relevance of every component on both reference sets (only continuation tokens of the
    #    undesired pairs are explained), 3. cut the most behaviour-specific ones (paper Eq. 7).
    config = hf_sparc.SparcConfig(
        method="lrp",
        level=args.level,
        count=args.count,
        fraction=getattr(args, "fraction", None) if args.count is None else None,
        target_modules=target_modules(model),
        max_length=args.max_length,
        # a reference is a prompt plus up to --max-new-tokens generated tokens: room for the whole prompt
        undesired_max_length=args.max_length + args.max_new_tokens,
        batch_size=max(1, args.batch_size // 2),  # a backward pass needs more memory
        absolute=args.absolute,
        protect_general=args.protect_general,
        adapter_name=behavior.name,
    )
    pruner = hf_sparc.SparcPruner(config).fit(model, tokenizer, undesired=list(references), general=general)
    masks = pruner.masks
    print(f"pruning {masks.total()} of {masks.size()} {args.level}s:\n{masks.summary()}")

    # 4. Measure on held-out data (--split: dev or test), before and after, and save the cut as a
    #    mask adapter.
    held_out = behavior.candidates(args.split)[: args.eval_prompts]
    eval_texts = builtin_dataset("general", args.split)[: args.eval_texts]
    before = evaluate(model, tokenizer, behavior, held_out, eval_texts, args)
    peft_model = pruner.prune(model)
    after = evaluate(peft_model, tokenizer, behavior, held_out, eval_texts, args)
    print_table(before, after, {key: behavior.metric_named(key).direction for key in before})
    hf_sparc.save_adapter(
        peft_model,
        output,
        overwrite=args.overwrite,
        metrics={f"{key} (after)": value for key, value in after.items()},
        reference_data=(
            f"{references.n_continuations} of the model's own {behavior.name} references among "
            f"{references.n_candidates} built-in candidates (threshold {references.threshold}, explained: "
            f"{references.focus}) vs {len(general)} built-in general texts"
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
