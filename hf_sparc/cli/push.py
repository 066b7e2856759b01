"""``hf-sparc push``: upload a run folder (adapter, config, report) to the Hub."""

from __future__ import annotations

import argparse
from pathlib import Path

from hf_sparc.cli._common import Formatter
from hf_sparc.tuner.hub import upload_folder
from hf_sparc_cli import COMMAND_HELP


def _run(args: argparse.Namespace) -> None:
    folder = Path(args.folder)
    if not (folder / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{folder} holds no adapter_config.json; run `hf-sparc correct` first.")
    print(
        upload_folder(
            args.repo_id, folder, token=args.token, private=args.private, commit_message=args.message
        )
    )


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("push", help=COMMAND_HELP["push"], formatter_class=Formatter)
    parser.add_argument("folder")
    parser.add_argument("repo_id")
    parser.add_argument("--private", action="store_true")
    parser.add_argument("--token", default=None)
    parser.add_argument("--message", default="Upload SPARC pruning adapter")
    parser.set_defaults(run=_run)
