"""``hf-sparc correct``: attribute on undesired and general texts, select contrastively, prune.

Two ways in: ``--behavior NAME`` (a key of ``hf_sparc.behaviors.BEHAVIORS``) runs the paper's
experiment on the built-in data (references from the model's own behaviour, equal-size controls,
plots, per-neuron insight);
``--undesired SPEC --general SPEC`` prunes from your own reference texts.
"""

from __future__ import annotations

import argparse

from hf_sparc.cli._common import (
    BATCH_SIZE,
    MAX_LENGTH,
    SPEC_HELP,
    Formatter,
    Output,
    add_amount_options,
    add_attribution_options,
    add_model_options,
    add_output_options,
    add_scaling_options,
    evaluation_perplexity,
    evaluation_texts,
    load_model,
    loading_options,
    pruning_report,
    save_pruning_run,
    scaling_options,
)
from hf_sparc.cli._experiment import add_experiment_options, experiment_settings
from hf_sparc_cli import COMMAND_HELP


def _config(args: argparse.Namespace):
    from hf_sparc import SparcConfig

    return SparcConfig(
        method=args.method,
        level=args.level,
        count=args.count,
        fraction=args.fraction,
        scope=args.scope,
        target_modules=args.target_modules,
        max_length=args.max_length or MAX_LENGTH,
        batch_size=args.batch_size or BATCH_SIZE,
        absolute=args.absolute,
        objective=args.objective,
        protect_general=args.protect_general or 0.0,
        seed=args.seed,
        **scaling_options(args),
    )


def _perplexity(
    model, tokenizer, texts: list[str] | None, args: argparse.Namespace
) -> dict[str, float] | None:
    value = evaluation_perplexity(model, tokenizer, texts, args)
    return None if value is None else {"perplexity": value}


def _run(args: argparse.Namespace) -> None:
    if args.behavior:
        if args.checkpoint_dir or args.gradient_checkpointing:
            raise ValueError(
                "--checkpoint-dir/--gradient-checkpointing apply to --undesired runs, not --behavior."
            )
        if args.undesired or args.general or args.eval:
            raise ValueError(
                "--behavior uses the built-in data; do not combine it with --undesired/--general/--eval."
            )
        _run_behavior(args)
    else:
        if args.split:
            raise ValueError("--split applies to --behavior runs; with --eval pass the split in the SPEC.")
        if args.method == "aura":
            raise ValueError(
                "--method aura needs --behavior (AurA's sentences come from the model's own continuations)."
            )
        _run_references(args)


def _run_behavior(args: argparse.Namespace) -> None:
    from hf_sparc.tuner.export import save_adapter
    from hf_sparc.tuner.model import apply_masks
    from hf_sparc.workflows import insight
    from hf_sparc.workflows.correction import run_correction

    settings = experiment_settings(args)
    with Output(args.output, args.overwrite) as output:
        model, tokenizer = load_model(args.model, **loading_options(args))
        result = run_correction(model, tokenizer, settings)
        corrected = apply_masks(model, result.masks, adapter_name="sparc")
        refs = result.references
        save_adapter(
            corrected, output.work, overwrite=True, metrics=_card_metrics(result.rows[settings.method]),
            metrics_before=_card_metrics(result.rows["base"]),
            reference_data=f"{refs.get('n_kept')} {settings.behavior} references ({refs.get('focus')}) from "
            f"{refs.get('n_candidates')} built-in candidates; {refs.get('n_general')} general texts",
        )  # fmt: skip
        notes = insight.correction_notes(
            corrected, tokenizer, result.masks, result.reference_pairs.contexts(), output.work,
            batch_size=settings.batch_size, max_length=settings.reference_max_length,
        )  # fmt: skip
        result.save(
            output.work, f"{settings.behavior} correction of {args.model}", notes, {"model": args.model}
        )
    print(result.table())
    print(f"adapter, report.md and plot.png in {args.output}")


def _card_metrics(row: dict[str, float]) -> dict[str, float]:
    """A result row's metrics for the model card (no per-seed spreads, no counts)."""
    return {key: value for key, value in row.items() if not key.endswith("_sd") and key != "pruned"}


def _run_references(args: argparse.Namespace) -> None:
    from hf_sparc import SparcPruner
    from hf_sparc.data.sources import load_texts

    config = _config(args)
    undesired = load_texts(args.undesired) if args.undesired else None
    general = load_texts(args.general) if args.general else None
    held_out = evaluation_texts(args.eval)
    with Output(args.output, args.overwrite) as output:
        model, tokenizer = load_model(args.model, **loading_options(args))
        before = _perplexity(model, tokenizer, held_out, args)
        pruner = SparcPruner(config).fit(model, tokenizer, undesired=undesired, general=general)
        peft_model = pruner.prune(model)
        after = _perplexity(peft_model, tokenizer, held_out, args)
        references = {
            "undesired": {"spec": args.undesired, "n": len(undesired or [])},
            "general": {"spec": args.general, "n": len(general or [])},
        }
        report = pruning_report(pruner, args.model, before, after, references)
        save_pruning_run(output.work, pruner, peft_model, report)
    print(f"pruned {pruner.masks.total()} {pruner.config.level}s; adapter and report in {args.output}")


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "correct",
        help=COMMAND_HELP["correct"],
        formatter_class=Formatter,
        epilog=SPEC_HELP,
    )
    add_model_options(parser, experiment=True)
    add_attribution_options(parser, extra_methods=("aura",))
    add_amount_options(parser, None)
    add_experiment_options(parser)
    add_scaling_options(parser)
    parser.add_argument("--undesired", help="SPEC of texts showing the behaviour to remove")
    parser.add_argument("--general", help="SPEC of general texts whose behaviour must be kept")
    parser.add_argument("--scope", default="global", choices=["global", "layer", "row"], help="ranking scope")
    parser.add_argument("--eval", default=None, help="SPEC of held-out texts for perplexity before/after")
    add_output_options(parser, "folder for adapter, config, relevance and report")
    parser.set_defaults(run=_run)
