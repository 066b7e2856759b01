"""``hf-sparc``: attribute, select, correct, evaluate, export and push from the command line.

User mistakes (bad path, bad SPEC, bad option, mismatched adapter) end with one line on
stderr and exit code 2 — a traceback only with ``--debug``. Outputs are written to a temporary folder and
renamed into place at the very end, so a failed run never leaves a folder that looks complete.

A command is one module of this package with a ``register(commands)`` function, listed in
``COMMANDS``.
"""

from __future__ import annotations

import argparse
import sys

from hf_sparc.cli import (
    attribute,
    circuit,
    compress,
    correct,
    evaluate,
    export,
    inspect_adapter,
    prepare,
    push,
    select,
    sweep,
)
from hf_sparc.cli._common import Formatter

COMMANDS = (
    correct,
    sweep,
    attribute,
    select,
    evaluate,
    export,
    push,
    circuit,
    compress,
    inspect_adapter,
    prepare,
)

_USER_ERRORS = (ValueError, TypeError, FileNotFoundError, FileExistsError, ImportError, OSError, KeyError)


def build_parser() -> argparse.ArgumentParser:
    """The ``hf-sparc`` parser with every command of ``COMMANDS``."""
    from hf_sparc import __version__

    parser = argparse.ArgumentParser(prog="hf-sparc", description=__doc__, formatter_class=Formatter)
    parser.add_argument("--version", action="version", version=f"hf-sparc {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of any error")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit code (2 for user mistakes, with a one-line message)."""
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except _USER_ERRORS as error:
        if args.debug:
            raise
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"hf-sparc {args.command}: error: {message}", file=sys.stderr)
        print("(hf-sparc --debug ... shows the full traceback)", file=sys.stderr)
        return 2
    return 0
