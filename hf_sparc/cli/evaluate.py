"""``hf-sparc evaluate``: perplexity of a model, optionally with an adapter."""

from __future__ import annotations

import argparse
import json

from hf_sparc.cli._common import (
    SPEC_HELP,
    Formatter,
    add_model_options,
    evaluation_perplexity,
    load_with_adapter,
)


def _run(args: argparse.Namespace) -> None:
    model, tokenizer = load_with_adapter(args)
    result = {"perplexity": evaluation_perplexity(model, tokenizer, args.texts, args)}
    print(json.dumps(result, indent=2))


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "evaluate",
        help="perplexity of a model (with an adapter)",
        formatter_class=Formatter,
        epilog=SPEC_HELP,
    )
    add_model_options(parser)
    parser.add_argument("--adapter", default=None, help="SPARC adapter folder or Hub repo")
    parser.add_argument(
        "--texts", default="general:dev", help="SPEC of texts (general:test for a final report)"
    )
    parser.set_defaults(run=_run)
