"""``hf-sparc push``: upload a run folder (adapter, config, report) to the Hub."""

from __future__ import annotations

import argparse
from pathlib import Path

from hf_sparc.cli._common import Formatter


def _run(args: argparse.Namespace) -> None:
    from huggingface_hub import HfApi

    folder = Path(args.folder)
    if not (folder / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{folder} holds no adapter_config.json; run `hf-sparc correct` first.")
    api = HfApi(token=args.token)
    api.create_repo(args.repo_id, private=args.private, exist_ok=True)
    commit = api.upload_folder(repo_id=args.repo_id, folder_path=str(folder), commit_message=args.message)
    print(commit.commit_url)


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("push", help="upload a run folder to the Hub", formatter_class=Formatter)
    parser.add_argument("folder")
    parser.add_argument("repo_id")
    parser.add_argument("--private", action="store_true")
    parser.add_argument("--token", default=None)
    parser.add_argument("--message", default="Upload SPARC pruning adapter")
    parser.set_defaults(run=_run)
