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
from pathlib import Path

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
from hf_sparc_cli import top_parser

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
    """The ``hf-sparc`` parser with every command of ``COMMANDS`` (global options, names and help
    texts from :mod:`hf_sparc_cli`, which answers ``--help`` without importing this package)."""
    parser, commands = top_parser()
    for command in COMMANDS:
        command.register(commands)
    return parser


def _config_file(argv: list[str]) -> str | None:
    """The FILE of ``--config FILE`` / ``--config=FILE`` before the command name, if any."""
    for index, token in enumerate(argv):
        if token == "--config" and index + 1 < len(argv):
            return argv[index + 1]
        if token.startswith("--config="):
            return token.split("=", 1)[1]
        if not token.startswith("-"):
            return None  # the command name: later tokens belong to the command
    return None


def _apply_config(parser: argparse.ArgumentParser, argv: list[str], path: str) -> None:
    """Make the options in ``path`` the defaults of the command named in ``argv``."""
    import json

    import yaml

    text = Path(path).read_text(encoding="utf-8")
    try:
        values = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ValueError(f"{path} is not valid YAML: {error}") from error
    if not isinstance(values, dict):
        raise ValueError(f"{path} must hold a mapping of option names to values.")
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    name = next((token for token in argv if token in commands.choices), None)
    if name is None:
        raise ValueError("--config needs a command (e.g. hf-sparc --config run.yaml correct).")
    command = commands.choices[name]
    actions = {a.dest: a for a in command._actions if a.dest != "help"}
    defaults = {}
    for key, value in values.items():
        dest = str(key).lstrip("-").replace("-", "_")
        if dest not in actions:
            raise ValueError(f"{path}: {key!r} is not an option of hf-sparc {name}.")
        defaults[dest] = value
        actions[dest].required = False  # given by the file; the command line may still override it
    command.set_defaults(**defaults)


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit code (2 for user mistakes, with a one-line message)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    config = _config_file(argv)
    if config is not None:
        try:
            _apply_config(parser, argv, config)
        except (ValueError, OSError, ImportError) as error:
            print(f"hf-sparc: error: {str(error).splitlines()[0]}", file=sys.stderr)
            return 2
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except _USER_ERRORS as error:
        if args.debug:
            raise
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"hf-sparc {args.command}: error: {message}", file=sys.stderr)
        return 2
    return 0
