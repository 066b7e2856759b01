"""``hf-sparc``: attribute, select, correct, evaluate, export and push from the command line.

User mistakes (bad path, bad SPEC, bad option, mismatched adapter) end with one line on
stderr and exit code 2 — never a traceback. Outputs are written to a temporary folder and
renamed into place at the very end, so a failed run never leaves a folder that looks complete.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from hf_sparc.attribution.methods import METHODS

_USER_ERRORS = (ValueError, TypeError, FileNotFoundError, FileExistsError, ImportError, OSError, KeyError)
_DTYPES = ("float32", "bfloat16", "float16")


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


# -- model and output helpers --------------------------------------------------------------------
def _load(model: str, device: str, dtype: str):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_sparc import assets

    path = str(assets.default_model_path(model)) if model in assets.available_models() else model
    tokenizer = AutoTokenizer.from_pretrained(path)
    loaded = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
    return loaded.to(device).eval(), tokenizer


class _Output:
    """A folder that appears at ``target`` only when the run succeeded (temp folder + rename)."""

    def __init__(self, target: str, overwrite: bool) -> None:
        self.target = Path(target)
        if (
            self.target.exists()
            and (not self.target.is_dir() or any(self.target.iterdir()))
            and not overwrite
        ):
            raise FileExistsError(f"{target} exists and is not empty; pass --overwrite to replace it.")
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.work = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.", dir=self.target.parent))

    def commit(self) -> None:
        old = None
        if self.target.exists():
            old = self.target.with_name(f".{self.target.name}.old-{os.getpid()}")
            os.replace(self.target, old)
        os.replace(self.work, self.target)
        if old is not None:
            shutil.rmtree(old) if old.is_dir() else old.unlink()

    def discard(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)


def _write_report(folder: Path, report: dict[str, Any]) -> None:
    from hf_sparc.report import render_markdown

    (folder / "report.md").write_text(render_markdown(report))
    (folder / "report.json").write_text(json.dumps(report, indent=2) + "\n")


def _config_from(args):
    from hf_sparc import SparcConfig

    return SparcConfig(
        method=args.method,
        level=args.level,
        count=args.count,
        fraction=args.fraction,
        scope=args.scope,
        target_modules=args.target_modules,
        max_length=args.max_length,
        batch_size=args.batch_size,
        absolute=args.absolute,
        protect_general=args.protect_general,
        seed=args.seed,
    )


def _perplexity(model, tokenizer, spec: str | None, args) -> float | None:
    if spec is None:
        return None
    from hf_sparc.metrics import perplexity
    from hf_sparc.sources import load_texts, plain_texts

    texts = plain_texts(load_texts(spec, default_split="evaluation"))
    return perplexity(model, tokenizer, texts, max_length=args.max_length, batch_size=args.batch_size)


# -- commands ------------------------------------------------------------------------------------
def _cmd_attribute(args) -> None:
    from hf_sparc import attribute
    from hf_sparc.sources import load_texts

    model, tokenizer = _load(args.model, args.device, args.dtype)
    texts = load_texts(args.texts) if args.texts else None
    rel = attribute(
        model,
        texts,
        tokenizer=tokenizer,
        method=args.method,
        level=args.level,
        target_modules=args.target_modules,
        batch_size=args.batch_size,
        max_length=args.max_length,
        absolute=args.absolute,
        seed=args.seed,
    )
    if Path(args.output).exists() and not args.overwrite:
        raise FileExistsError(f"{args.output} exists; pass --overwrite to replace it.")
    rel.save(args.output)
    print(f"saved {rel!r} to {args.output}")


def _save_run(output: _Output, pruner, peft_model, report: dict[str, Any]) -> None:
    from hf_sparc.export import save_adapter

    save_adapter(peft_model, output.work, overwrite=True, metrics=report.get("metrics_after"))
    pruner.save_pretrained(output.work)
    _write_report(output.work, report)
    output.commit()


def _run_report(pruner, model_name: str, before, after, references: dict[str, Any]) -> dict[str, Any]:
    masks = pruner.masks
    summary = masks.summary()
    return {
        "model": model_name,
        "config": pruner.config.to_dict(),
        "references": references,
        "pruned": summary.pruned,
        "total": summary.total,
        "fraction": summary.fraction,
        "per_module": {row.module: row.pruned for row in summary.rows if row.pruned},
        "rule": masks.rule,
        "metrics_before": before,
        "metrics_after": after,
    }


def _metrics(model, tokenizer, args) -> dict[str, float] | None:
    value = _perplexity(model, tokenizer, args.eval, args)
    return None if value is None else {"perplexity": value}


def _cmd_correct(args) -> None:
    from hf_sparc import SparcPruner
    from hf_sparc.sources import load_texts

    output = _Output(args.output, args.overwrite)
    try:
        undesired = load_texts(args.undesired) if args.undesired else None
        general = load_texts(args.general) if args.general else None
        model, tokenizer = _load(args.model, args.device, args.dtype)
        before = _metrics(model, tokenizer, args)
        pruner = SparcPruner(_config_from(args)).fit(model, tokenizer, undesired=undesired, general=general)
        peft_model = pruner.prune(model)
        after = _metrics(peft_model, tokenizer, args)
        references = {
            "undesired": {"spec": args.undesired, "n": len(undesired or [])},
            "general": {"spec": args.general, "n": len(general or [])},
        }
        report = _run_report(pruner, args.model, before, after, references)
        _save_run(output, pruner, peft_model, report)
    except BaseException:
        output.discard()
        raise
    print(f"pruned {pruner.masks.total()} {pruner.config.level}s; adapter and report in {args.output}")


def _cmd_select(args) -> None:
    from hf_sparc import SparcPruner

    pruner = SparcPruner.from_pretrained(args.pruner)
    if args.count is None and args.fraction is None:
        raise ValueError("Give --count or --fraction for the new selection.")
    output = _Output(args.output, args.overwrite)
    try:
        pruner.select(count=args.count, fraction=args.fraction)
        model, _ = _load(args.model, args.device, args.dtype)
        peft_model = pruner.prune(model)
        report = _run_report(pruner, args.model, None, None, {"from": args.pruner})
        _save_run(output, pruner, peft_model, report)
    except BaseException:
        output.discard()
        raise
    print(f"re-selected {pruner.masks.total()} {pruner.masks.level}s from {args.pruner} into {args.output}")


def _with_adapter(args):
    model, tokenizer = _load(args.model, args.device, args.dtype)
    if getattr(args, "adapter", None):
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, args.adapter).eval()
    return model, tokenizer


def _cmd_evaluate(args) -> None:
    model, tokenizer = _with_adapter(args)
    result = {"perplexity": _perplexity(model, tokenizer, args.texts, args)}
    print(json.dumps(result, indent=2))


def _cmd_export(args) -> None:
    from peft import PeftModel

    from hf_sparc.export import export_ia3, export_merged

    if not Path(args.adapter, "adapter_config.json").is_file():
        raise FileNotFoundError(f"{args.adapter} holds no adapter_config.json.")
    base_name = args.model or json.loads(Path(args.adapter, "adapter_config.json").read_text()).get(
        "base_model_name_or_path"
    )
    if not base_name:
        raise ValueError("The adapter does not name its base model; pass --model.")
    model, tokenizer = _load(base_name, args.device, args.dtype)
    peft_model = PeftModel.from_pretrained(model, args.adapter)
    if args.format == "merged":
        export_merged(peft_model, args.output)
        tokenizer.save_pretrained(args.output)
    else:
        export_ia3(peft_model, args.output, overwrite=args.overwrite)
    print(f"exported {args.format} to {args.output}")


def _cmd_push(args) -> None:
    from huggingface_hub import HfApi

    folder = Path(args.folder)
    if not (folder / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{folder} holds no adapter_config.json; run `hf-sparc correct` first.")
    api = HfApi(token=args.token)
    api.create_repo(args.repo_id, private=args.private, exist_ok=True)
    commit = api.upload_folder(repo_id=args.repo_id, folder_path=str(folder), commit_message=args.message)
    print(commit.commit_url)


# -- parser --------------------------------------------------------------------------------------
def _add_model(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument(
        "--model", required=required, help="Hub id, local folder, or built-in name (smollm2-135m-instruct)"
    )
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1")
    parser.add_argument("--dtype", default="float32", choices=_DTYPES, help="weights dtype")
    parser.add_argument("--batch-size", type=int, default=8, help="texts per forward/backward pass")
    parser.add_argument("--max-length", type=int, default=128, help="tokens per text (longer: truncated)")


def _add_attribution(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", default="lrp", choices=list(METHODS), help="attribution method")
    parser.add_argument(
        "--level", default="neuron", choices=["neuron", "head", "weight"], help="what to prune"
    )
    parser.add_argument("--target-modules", nargs="+", default=None, help="module name suffixes")
    parser.add_argument("--absolute", action="store_true", help="sum |R| over tokens instead of signed R")
    parser.add_argument("--seed", type=int, default=0, help="seed (random method, data splits)")


def _add_amount(parser: argparse.ArgumentParser, default_count: int | None) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--count", type=int, default=default_count, help="components to prune (default 100)")
    group.add_argument("--fraction", type=float, default=None, help="share of components to prune")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf-sparc", description=__doc__, formatter_class=_Formatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    spec_help = (
        "SPEC: a .txt/.jsonl/.csv file, a built-in (toxic-prompts, general, repetition-prompts, "
        "optionally :reference/:evaluation) or a datasets spec name[:config][:split][:column]"
    )

    correct = commands.add_parser(
        "correct",
        help="attribute, select contrastively and prune",
        formatter_class=_Formatter,
        epilog=spec_help,
    )
    _add_model(correct)
    _add_attribution(correct)
    _add_amount(correct, None)
    correct.add_argument("--undesired", help="SPEC of texts showing the behaviour to remove")
    correct.add_argument("--general", help="SPEC of general texts whose behaviour must be kept")
    correct.add_argument(
        "--scope", default="global", choices=["global", "layer", "row"], help="ranking scope"
    )
    correct.add_argument(
        "--protect-general",
        type=float,
        default=0.0,
        help="share of units with the largest general relevance that are never cut (0 = paper Eq. 7)",
    )
    correct.add_argument("--eval", default=None, help="SPEC of held-out texts for perplexity before/after")
    correct.add_argument("--output", required=True, help="folder for adapter, config, relevance and report")
    correct.add_argument("--overwrite", action="store_true", help="replace existing output")
    correct.set_defaults(run=_cmd_correct)

    attribute = commands.add_parser(
        "attribute", help="compute and save relevance", formatter_class=_Formatter, epilog=spec_help
    )
    _add_model(attribute)
    _add_attribution(attribute)
    attribute.add_argument("--texts", help="SPEC of reference texts (not needed for magnitude/random)")
    attribute.add_argument("--output", required=True, help="relevance file (.safetensors)")
    attribute.add_argument("--overwrite", action="store_true", help="replace existing output")
    attribute.set_defaults(run=_cmd_attribute)

    reselect = commands.add_parser(
        "select", help="re-select from a saved run without re-attributing", formatter_class=_Formatter
    )
    reselect.add_argument("pruner", help="folder written by `hf-sparc correct`")
    _add_model(reselect)
    _add_amount(reselect, None)
    reselect.add_argument("--output", required=True)
    reselect.add_argument("--overwrite", action="store_true", help="replace existing output")
    reselect.set_defaults(run=_cmd_select)

    evaluate = commands.add_parser(
        "evaluate",
        help="perplexity of a model (with an adapter)",
        formatter_class=_Formatter,
        epilog=spec_help,
    )
    _add_model(evaluate)
    evaluate.add_argument("--adapter", default=None, help="SPARC adapter folder or Hub repo")
    evaluate.add_argument("--texts", default="general:evaluation", help="SPEC of texts")
    evaluate.set_defaults(run=_cmd_evaluate)

    export = commands.add_parser(
        "export", help="export for people without hf_sparc", formatter_class=_Formatter
    )
    export.add_argument("adapter", help="SPARC adapter folder")
    form = export.add_mutually_exclusive_group(required=True)
    form.add_argument(
        "--merged", dest="format", action="store_const", const="merged", help="plain merged checkpoint"
    )
    form.add_argument(
        "--ia3", dest="format", action="store_const", const="ia3", help="standard PEFT IA3 adapter"
    )
    export.add_argument("--output", required=True)
    export.add_argument("--overwrite", action="store_true", help="replace existing output")
    _add_model(export, required=False)
    export.set_defaults(run=_cmd_export)

    push = commands.add_parser("push", help="upload a run folder to the Hub", formatter_class=_Formatter)
    push.add_argument("folder")
    push.add_argument("repo_id")
    push.add_argument("--private", action="store_true")
    push.add_argument("--token", default=None)
    push.add_argument("--message", default="Upload SPARC pruning adapter")
    push.set_defaults(run=_cmd_push)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except _USER_ERRORS as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"hf-sparc {args.command}: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
