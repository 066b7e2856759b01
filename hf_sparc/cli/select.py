"""``hf-sparc select``: a new selection from a saved run, without attributing again."""

from __future__ import annotations

import argparse

from hf_sparc.cli._common import (
    Formatter,
    Output,
    add_amount_options,
    add_model_options,
    add_output_options,
    load_model,
    loading_options,
    pruning_report,
    save_pruning_run,
)
from hf_sparc.workflows.pruner import SparcPruner
from hf_sparc_cli import COMMAND_HELP


def _run(args: argparse.Namespace) -> None:
    pruner = SparcPruner.from_pretrained(args.pruner)
    if args.count is None and args.fraction is None:
        raise ValueError("Give --count or --fraction for the new selection.")
    with Output(args.output, args.overwrite) as output:
        pruner.select(count=args.count, fraction=args.fraction)
        model, _ = load_model(args.model, **loading_options(args))
        peft_model = pruner.prune(model)
        report = pruning_report(pruner, args.model, None, None, {"from": args.pruner})
        save_pruning_run(output.work, pruner, peft_model, report)
    print(f"re-selected {pruner.masks.total()} {pruner.masks.level}s from {args.pruner} into {args.output}")


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("select", help=COMMAND_HELP["select"], formatter_class=Formatter)
    parser.add_argument("pruner", help="folder written by `hf-sparc correct`")
    add_model_options(parser)
    add_amount_options(parser, None)
    add_output_options(parser, "folder for the new adapter and report")
    parser.set_defaults(run=_run)
