"""``hf-sparc attribute``: compute relevance and save it."""

from __future__ import annotations

import argparse
from pathlib import Path

from hf_sparc.cli._common import (
    SPEC_HELP,
    Formatter,
    add_attribution_options,
    add_model_options,
    add_output_options,
    add_scaling_options,
    load_model,
    loading_options,
    scaling_options,
)
from hf_sparc_cli import COMMAND_HELP


def _run(args: argparse.Namespace) -> None:
    from hf_sparc import attribute
    from hf_sparc.data.sources import load_texts

    if Path(args.output).exists() and not args.overwrite:
        raise FileExistsError(f"{args.output} exists; pass --overwrite to replace it.")
    texts = load_texts(args.texts) if args.texts else None
    model, tokenizer = load_model(args.model, **loading_options(args))
    relevance = attribute(
        model,
        texts,
        tokenizer=tokenizer,
        method=args.method,
        level=args.level,
        target_modules=args.target_modules,
        batch_size=args.batch_size,
        max_length=args.max_length,
        absolute=args.absolute,
        objective=args.objective,
        seed=args.seed,
        **scaling_options(args),
    )
    relevance.save(args.output, overwrite=args.overwrite)
    print(f"saved {relevance!r} to {args.output}")


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "attribute", help=COMMAND_HELP["attribute"], formatter_class=Formatter, epilog=SPEC_HELP
    )
    add_model_options(parser)
    add_attribution_options(parser)
    add_scaling_options(parser)
    parser.add_argument("--texts", help="SPEC of reference texts (not needed for magnitude/random)")
    add_output_options(parser, "relevance file (.safetensors)")
    parser.set_defaults(run=_run)
