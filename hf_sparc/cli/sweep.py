"""``hf-sparc sweep``: a grid of counts → Pareto plot and the strongest correction within a budget."""

from __future__ import annotations

import argparse

from hf_sparc.cli._common import (
    Formatter,
    Output,
    add_attribution_options,
    add_model_options,
    add_output_options,
    load_model,
    loading_options,
)
from hf_sparc.cli._experiment import add_experiment_options, experiment_settings
from hf_sparc_cli import COMMAND_HELP


def _run(args: argparse.Namespace) -> None:
    from hf_sparc.tuner.export import save_adapter
    from hf_sparc.tuner.model import apply_masks
    from hf_sparc.workflows import insight
    from hf_sparc.workflows.sweep import run_sweep

    settings = experiment_settings(args)
    with Output(args.output, args.overwrite) as output:
        model, tokenizer = load_model(args.model, **loading_options(args))
        result = run_sweep(model, tokenizer, settings, args.counts, budget=args.budget)
        notes = []
        if result.pick_masks is not None:
            corrected = apply_masks(model, result.pick_masks, adapter_name="sparc")
            save_adapter(corrected, output.work / "adapter", metrics=result.pick.metrics)
            notes = insight.correction_notes(
                corrected, tokenizer, result.pick_masks, result.reference_pairs.contexts(), output.work,
                batch_size=settings.batch_size, max_length=settings.reference_max_length,
            )  # fmt: skip
        result.save(output.work, f"{settings.behavior} sweep of {args.model}", notes)
    print(result.table())
    verdict = f"pick: {result.pick.count}, adapter in {args.output}/adapter" if result.pick else "no pick"
    print(f"{verdict}; report.md and pareto.png in {args.output}")


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "sweep",
        help=COMMAND_HELP["sweep"],
        formatter_class=Formatter,
    )
    add_model_options(parser, experiment=True)
    add_attribution_options(parser)
    add_experiment_options(parser, sweep=True)
    parser.add_argument(
        "--counts", type=int, nargs="+", default=[35, 69, 138, 276, 552], help="numbers of units to cut"
    )
    parser.add_argument(
        "--budget", type=float, default=0.02, help="allowed relative perplexity increase of the pick"
    )
    add_output_options(parser, "folder for report.md, pareto.png and the picked adapter (adapter/)")
    parser.set_defaults(run=_run)
