"""``hf-sparc correct``: attribute on undesired and general texts, select contrastively, prune."""

from __future__ import annotations

import argparse

from hf_sparc.cli._common import (
    SPEC_HELP,
    Formatter,
    Output,
    add_amount_options,
    add_attribution_options,
    add_model_options,
    add_output_options,
    evaluation_perplexity,
    load_model,
    pruning_report,
    save_pruning_run,
)


def _config(args: argparse.Namespace):
    from hf_sparc import SparcConfig

    return SparcConfig(
        method=args.method,
        level=args.level,
        count=args.count,
        fraction=args.fraction,
        scope=args.scope,
        target_modules=args.target_modules,
        max_length=args.max_length,
        batch_size=args.batch_size,
        absolute=args.absolute,
        protect_general=args.protect_general,
        seed=args.seed,
    )


def _perplexity(model, tokenizer, args: argparse.Namespace) -> dict[str, float] | None:
    value = evaluation_perplexity(model, tokenizer, args.eval, args)
    return None if value is None else {"perplexity": value}


def _run(args: argparse.Namespace) -> None:
    from hf_sparc import SparcPruner
    from hf_sparc.sources import load_texts

    with Output(args.output, args.overwrite) as output:
        undesired = load_texts(args.undesired) if args.undesired else None
        general = load_texts(args.general) if args.general else None
        model, tokenizer = load_model(args.model, args.device, args.dtype)
        before = _perplexity(model, tokenizer, args)
        pruner = SparcPruner(_config(args)).fit(model, tokenizer, undesired=undesired, general=general)
        peft_model = pruner.prune(model)
        after = _perplexity(peft_model, tokenizer, args)
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
        help="attribute, select contrastively and prune",
        formatter_class=Formatter,
        epilog=SPEC_HELP,
    )
    add_model_options(parser)
    add_attribution_options(parser)
    add_amount_options(parser, None)
    parser.add_argument("--undesired", help="SPEC of texts showing the behaviour to remove")
    parser.add_argument("--general", help="SPEC of general texts whose behaviour must be kept")
    parser.add_argument("--scope", default="global", choices=["global", "layer", "row"], help="ranking scope")
    parser.add_argument(
        "--protect-general",
        type=float,
        default=0.0,
        help="share of units with the largest general relevance that are never cut (0 = paper Eq. 7)",
    )
    parser.add_argument("--eval", default=None, help="SPEC of held-out texts for perplexity before/after")
    add_output_options(parser, "folder for adapter, config, relevance and report")
    parser.set_defaults(run=_run)
