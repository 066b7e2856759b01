"""``hf-sparc circuit``: the smallest sub-network that still solves a task, as a SPARC adapter.

Ranks units by relevance for the task's logit difference (correct − wrong continuation) on the
reference items, prunes the least relevant progressively (global ranking), measures accuracy and
logit difference on the dev items (``curve.png``, ``report.json``), and saves the circuit
— the smallest kept set with accuracy ≥ threshold × the unpruned accuracy — as an adapter that
masks everything outside it. ``--task ioi`` generates indirect object identification prompts;
any file with ``prompt``/``correct``/``wrong`` columns (.jsonl or .csv) is a custom task.
"""

from __future__ import annotations

import argparse

from hf_sparc.cli._common import (
    Formatter,
    Output,
    add_model_options,
    add_output_options,
    load_model,
    loading_options,
)
from hf_sparc_cli import COMMAND_HELP


def _task(args: argparse.Namespace, tokenizer) -> tuple[list, list]:
    from hf_sparc.data.builtin import split_items
    from hf_sparc.data.sources import load_texts
    from hf_sparc.data.tasks import ioi_dataset

    if args.task == "ioi":
        return (
            ioi_dataset(tokenizer, n=args.n, split="reference", seed=args.seed),
            ioi_dataset(tokenizer, n=args.n, split="dev", seed=args.seed),
        )
    items = load_texts(args.task, default_split="all", seed=args.seed)[: args.n]
    if len(items) < 2:
        raise ValueError(
            f"{args.task} holds {len(items)} item(s); a task needs at least 2 (reference + dev)."
        )
    return split_items(items, "reference", args.seed), split_items(items, "dev", args.seed)


def _report_markdown(report: dict) -> str:
    circuit, baseline = report["circuit"], report["baseline"]
    lines = [
        f"# hf_sparc circuit: {report['task']} on {report['model']}",
        "",
        f"`{report['method']}` relevance, {report['level']} level, {report['n_reference']} reference and "
        f"{report['n_evaluation']} dev items. Unpruned: accuracy {baseline['accuracy']:.3f}, "
        f"logit difference {baseline['logit_diff']:.3f}.",
        "",
        f"**Circuit: {report['kept']} of {report['total']} {report['level']}s** "
        f"({report['kept_fraction']:.2%}) keep accuracy {circuit['accuracy']:.3f} "
        f"(≥ {report['threshold']:.0%} of unpruned), logit difference {circuit['logit_diff']:.3f}.",
        "",
        "![](curve.png)",
        "",
        "| pruned | kept | accuracy | logit diff |",
        "|---:|---:|---:|---:|",
    ]
    for point in report["points"]:
        mark = " ★" if point["pruned"] == circuit["pruned"] else ""
        lines.append(
            f"| {point['pruned']}{mark} | {report['total'] - point['pruned']} | {point['accuracy']:.3f} | "
            f"{point['logit_diff']:.3f} |"
        )
    if not report["adapter"]:
        lines += [
            "",
            "Every pruning step failed the threshold: the circuit is the whole model, no adapter saved.",
        ]
    return "\n".join(lines) + "\n"


def _run(args: argparse.Namespace) -> None:
    from hf_sparc import apply_masks, save_adapter
    from hf_sparc.reports.writer import write_report
    from hf_sparc.workflows.circuits import curve_figure, discover_circuit

    with Output(args.output, args.overwrite) as output:
        model, tokenizer = load_model(args.model, **loading_options(args))
        reference, evaluation = _task(args, tokenizer)
        result = discover_circuit(
            model,
            tokenizer,
            reference,
            evaluation,
            method=args.method,
            level=args.level,
            threshold=args.threshold,
            refine=args.refine,
            target_modules=args.target_modules,
            batch_size=args.batch_size,
            max_length=args.max_length,
            seed=args.seed,
        )
        if result.masks is not None:
            peft_model = apply_masks(model, result.masks)
            save_adapter(
                peft_model,
                output.work,
                overwrite=True,
                metrics={
                    "task_accuracy": result.circuit.accuracy,
                    "task_logit_diff": result.circuit.logit_diff,
                },
                reference_data=f"{args.task} ({len(reference)} items)",
            )
        report = {
            "model": args.model,
            "task": args.task,
            "n_reference": len(reference),
            "n_evaluation": len(evaluation),
            "adapter": result.masks is not None,
            **result.to_dict(),
        }
        write_report(
            output.work,
            markdown=_report_markdown(report),
            data=report,
            files={"curve.png": curve_figure([result])},
        )
    print(
        f"circuit: {result.kept} of {result.total} {result.level}s keep accuracy "
        f"{result.circuit.accuracy:.3f} (unpruned {result.baseline.accuracy:.3f}); written to {args.output}"
    )


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "circuit",
        help=COMMAND_HELP["circuit"],
        description=__doc__,
        formatter_class=Formatter,
    )
    add_model_options(parser)
    parser.add_argument(
        "--task",
        default="ioi",
        help="'ioi' (built-in, generated) or a .jsonl/.csv file of prompt/correct/wrong",
    )
    parser.add_argument("--n", type=int, default=200, help="task items (generated for ioi), split in half")
    parser.add_argument(
        "--method",
        default="lrp",
        choices=["lrp", "cp-lrp", "gradient", "activation", "wanda", "magnitude", "random"],
        help="how units are ranked",
    )
    parser.add_argument("--level", default="neuron", choices=["neuron", "head", "weight"], help="units")
    parser.add_argument("--target-modules", nargs="+", default=None, help="module name suffixes")
    parser.add_argument("--threshold", type=float, default=0.9, help="kept share of the unpruned accuracy")
    parser.add_argument("--refine", type=int, default=4, help="bisection steps around the threshold crossing")
    parser.add_argument("--seed", type=int, default=0, help="seed of the task generation and split")
    add_output_options(parser, "folder for the circuit adapter, curve and report")
    parser.set_defaults(run=_run)
