"""The ``hf-sparc`` entry point, kept outside the ``hf_sparc`` package so that ``hf-sparc --help``
and ``--version`` answer without importing torch, transformers and PEFT (seconds); any command
imports :mod:`hf_sparc.cli`, whose parser is built from the same names and help texts here.
"""

from __future__ import annotations

import argparse
import sys

DESCRIPTION = (
    "Attribution-guided pruning (LRP) for Hugging Face causal LMs: attribute, select, correct, "
    "evaluate, export and push. `hf-sparc COMMAND --help` lists a command's options. A user mistake "
    "ends with one line on stderr and exit code 2 (--debug shows the traceback); outputs appear only "
    "when complete."
)

COMMAND_HELP = {
    "correct": "attribute, select contrastively and prune",
    "sweep": "correct at a grid of counts; Pareto plot; pick within a perplexity budget",
    "attribute": "compute and save relevance",
    "select": "re-select from a saved run without re-attributing",
    "evaluate": "perplexity and zero-shot accuracy of a model (with an adapter)",
    "export": "export for people without hf_sparc",
    "push": "upload a run folder to the Hub",
    "circuit": "find the smallest sub-network solving a task (IOI or custom) and save it as an adapter",
    "compress": "prune the least relevant weights (unstructured sparsity), methods side by side",
    "inspect": "list an adapter's pruned units and the contexts where they fire",
    "prepare": "convert the built-in models (once) and check the built-in datasets",
}
"""Every command, in the order ``--help`` lists them, with its one-line help."""


def version() -> str:
    from importlib import metadata

    try:
        return metadata.version("hf-sparc")
    except metadata.PackageNotFoundError:
        return "unknown"


def top_parser(formatter_class: type[argparse.HelpFormatter] = argparse.HelpFormatter):
    """``(parser, commands)``: the global options and the sub-parser action, without any
    command's own options (those are added by :func:`hf_sparc.cli.build_parser`)."""
    parser = argparse.ArgumentParser(
        prog="hf-sparc", description=DESCRIPTION, formatter_class=formatter_class
    )
    parser.add_argument("--version", action="version", version=f"hf-sparc {version()}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of any error")
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="a YAML or JSON file of the command's options (names as on the command line, dashes or "
        "underscores); options given on the command line win",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    return parser, commands


def main(argv: list[str] | None = None) -> int:
    """``hf-sparc``: without a command name, answer ``--help``/``--version`` here; else run it."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not any(token in COMMAND_HELP for token in argv):
        parser, commands = top_parser()
        for name, text in COMMAND_HELP.items():
            commands.add_parser(name, help=text)
        parser.parse_args(argv)  # prints help, the version, or the usage error, and exits
    from hf_sparc.cli import main as run

    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
