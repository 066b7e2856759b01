"""``hf-sparc export``: a merged checkpoint or a standard IA3 adapter, for people without hf_sparc."""

from __future__ import annotations

import argparse

from hf_sparc.cli._common import (
    Formatter,
    add_model_options,
    add_output_options,
    load_adapter,
    loading_options,
)
from hf_sparc.tuner.export import export_ia3, export_merged
from hf_sparc_cli import COMMAND_HELP


def _run(args: argparse.Namespace) -> None:
    peft_model, tokenizer, _ = load_adapter(args.adapter, args.model, **loading_options(args))
    if args.format == "merged":
        export_merged(peft_model, args.output, overwrite=args.overwrite)
        tokenizer.save_pretrained(args.output)
    else:
        export_ia3(peft_model, args.output, overwrite=args.overwrite)
    print(f"exported {args.format} to {args.output}")


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("export", help=COMMAND_HELP["export"], formatter_class=Formatter)
    parser.add_argument("adapter", help="SPARC adapter folder")
    form = parser.add_mutually_exclusive_group(required=True)
    form.add_argument(
        "--merged", dest="format", action="store_const", const="merged", help="plain merged checkpoint"
    )
    form.add_argument(
        "--ia3", dest="format", action="store_const", const="ia3", help="standard PEFT IA3 adapter"
    )
    add_output_options(parser, "folder for the export")
    add_model_options(parser, required=False)
    parser.set_defaults(run=_run)
