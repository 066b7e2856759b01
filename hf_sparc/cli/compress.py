"""``hf-sparc compress``: unstructured sparsity from general reference text, methods side by side.

Scores every weight of the decoder-layer projections with the chosen method, prunes exactly
``⌊s·n⌋`` of them per scope, and saves a weight-level SPARC adapter (optionally a merged
checkpoint). Unless ``--no-compare``, LRP, Wanda and magnitude are all measured on the same
held-out tokens (default: the dev split of the built-in general text) and reported side by side.
"""

from __future__ import annotations

import argparse

from hf_sparc.attribution import OBJECTIVES
from hf_sparc.cli._common import (
    SPEC_HELP,
    Formatter,
    Output,
    add_model_options,
    add_output_options,
    load_model,
    loading_options,
)
from hf_sparc.data.sources import load_texts, plain_texts
from hf_sparc.reports.compression import compression_markdown
from hf_sparc.reports.writer import write_report
from hf_sparc.tuner.export import export_merged, save_adapter
from hf_sparc.tuner.model import apply_masks
from hf_sparc.workflows.compression import (
    COMPRESSION_METHODS,
    COMPRESSION_SCOPES,
    check_sparsity,
    compare_compression,
)
from hf_sparc_cli import COMMAND_HELP


def _run(args: argparse.Namespace) -> None:
    check_sparsity(args.sparsity)
    if args.n_reference < 1 or args.n_eval < 1:
        raise ValueError("--n-reference and --n-eval must be positive.")
    reference = plain_texts(load_texts(args.reference, seed=args.seed))[: args.n_reference]
    evaluation = plain_texts(load_texts(args.eval, default_split="dev", seed=args.seed))[: args.n_eval]
    methods = (
        [args.method]
        if args.no_compare
        else [args.method, *(m for m in COMPRESSION_METHODS if m != args.method)]
    )
    with Output(args.output, args.overwrite) as output:
        model, tokenizer = load_model(args.model, **loading_options(args))
        before, rows = compare_compression(
            model,
            tokenizer,
            reference,
            evaluation,
            sparsity=args.sparsity,
            methods=methods,
            scopes=[args.scope],
            absolute=not args.signed,
            objective=args.objective,
            target_modules=args.target_modules,
            batch_size=args.batch_size,
            max_length=args.max_length,
            keep_masks=(args.method, args.scope),
        )
        chosen = rows[0]
        peft_model = apply_masks(model, chosen.masks)
        save_adapter(
            peft_model,
            output.work,
            overwrite=True,
            metrics={"perplexity": chosen.perplexity},
            reference_data=f"{args.reference} ({len(reference)} texts)",
        )
        if args.merged:
            export_merged(peft_model, output.work / "merged")
            tokenizer.save_pretrained(output.work / "merged")
        report = {
            "model": args.model,
            "method": args.method,
            "scope": args.scope,
            "sparsity": args.sparsity,
            "absolute_lrp": not args.signed,
            "objective": args.objective,
            "reference": args.reference,
            "n_reference": len(reference),
            "evaluation": args.eval,
            "n_evaluation": len(evaluation),
            "max_length": args.max_length,
            "perplexity_before": before,
            "rows": [row.to_dict() for row in rows],
        }
        write_report(output.work, markdown=compression_markdown(report), data=report)
    print(compression_markdown(report))


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "compress",
        help=COMMAND_HELP["compress"],
        description=__doc__,
        formatter_class=Formatter,
        epilog=SPEC_HELP,
    )
    add_model_options(parser)
    parser.add_argument("--sparsity", type=float, default=0.5, help="share of weights to prune, in (0, 1)")
    parser.add_argument("--method", default="lrp", choices=COMPRESSION_METHODS, help="method of the adapter")
    parser.add_argument("--scope", default="global", choices=COMPRESSION_SCOPES, help="ranking scope")
    parser.add_argument("--reference", default="general", help="SPEC of general reference texts")
    parser.add_argument("--n-reference", type=int, default=128, help="reference texts used")
    parser.add_argument("--eval", default="general:dev", help="SPEC of held-out texts (perplexity)")
    parser.add_argument("--n-eval", type=int, default=64, help="held-out texts used")
    parser.add_argument("--target-modules", nargs="+", default=None, help="module name suffixes to prune")
    parser.add_argument("--signed", action="store_true", help="LRP: rank signed R instead of sum |R|")
    parser.add_argument(
        "--objective",
        default="next_token",
        choices=[name for name, objective in OBJECTIVES.items() if objective.per_token],
        help="methods with a backward pass: what is explained (next_token_logprob: what perplexity measures)",
    )
    parser.add_argument("--no-compare", action="store_true", help="evaluate only --method, not all methods")
    parser.add_argument(
        "--merged", action="store_true", help="also write a merged checkpoint to OUTPUT/merged"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the built-in data splits")
    add_output_options(parser, "folder for the adapter, report and optional merged checkpoint")
    parser.set_defaults(run=_run)
