"""Options of the built-in behaviour experiment (``hf-sparc correct --behavior``, ``hf-sparc sweep``)."""

from __future__ import annotations

import argparse


def add_experiment_options(parser: argparse.ArgumentParser, sweep: bool = False) -> None:
    """Options of the built-in behaviour experiment (``hf_sparc.workflows.correction.CorrectionSettings``)."""
    from hf_sparc.behaviors import BEHAVIORS, FOCUSES
    from hf_sparc.workflows.correction import CONTROLS
    from hf_sparc.workflows.correction import CorrectionSettings as S

    group = parser.add_argument_group("built-in behaviour experiment")
    group.add_argument(
        "--behavior",
        required=sweep,
        default=None,
        choices=list(BEHAVIORS),
        help="correct this behaviour on built-in data: references from the model's own continuations",
    )
    group.add_argument(
        "--protect-general",
        type=float,
        default=None,
        help="share of units with the largest general relevance never cut "
        f"(default {S.protect_general} with --behavior, measured best; otherwise 0 = paper Eq. 7)",
    )
    group.add_argument(
        "--threshold", type=float, default=S.threshold, help="score that makes a continuation a reference"
    )
    group.add_argument(
        "--focus",
        default=None,
        choices=FOCUSES,
        help="explain only the undesired words of each reference continuation, or all of its tokens "
        "(the paper's); default: the behaviour's ("
        + ", ".join(f"{name}: {behavior.default_focus}" for name, behavior in BEHAVIORS.items())
        + "; measured best)",
    )
    group.add_argument("--candidates", type=int, default=S.n_candidates, help="candidate prompts to continue")
    group.add_argument("--n-general", type=int, default=S.n_general, help="general reference texts")
    group.add_argument(
        "--split",
        default=None,
        choices=["dev", "test"],
        help=f"held-out split measured on (default {S.split}): choose counts, thresholds and options on dev; "
        "test is locked, for one final run of a configuration fixed beforehand",
    )
    group.add_argument(
        "--eval-prompts",
        type=int,
        default=S.n_eval_prompts,
        help="held-out prompts (default: the whole split)",
    )
    group.add_argument("--eval-texts", type=int, default=S.n_eval_texts, help="held-out texts for perplexity")
    group.add_argument(
        "--max-new-tokens", type=int, default=S.max_new_tokens, help="generated tokens per prompt"
    )
    group.add_argument(
        "--controls",
        nargs="*",
        choices=CONTROLS,
        default=None,
        help="equal-size controls (default: every control that can score the level"
        + ("; none for sweep)" if sweep else ")"),
    )
    group.add_argument("--random-seeds", type=int, default=S.random_seeds, help="seeds of the random control")
    group.add_argument(
        "--aura",
        action=argparse.BooleanOptionalAction,
        default=S.aura and not sweep,
        help="also measure AurA (Suau et al. 2024) and its top-count variant (neuron level)",
    )
    group.add_argument(
        "--dampen",
        type=float,
        default=None,
        help="scale in (0, 1) the selected units keep instead of being cut (soft masks; default: cut)",
    )
    group.add_argument(
        "--tasks",
        default=",".join(S.tasks) if not sweep else "none",
        help="zero-shot multiple-choice tasks (lm-evaluation-harness) measured on every selection: a comma "
        "list, or none",
    )
    group.add_argument("--task-limit", type=int, default=S.task_limit, help="questions per task")


def experiment_settings(args: argparse.Namespace):
    """``CorrectionSettings`` from the options of :func:`add_experiment_options` and the model options."""
    from hf_sparc.workflows.correction import CorrectionSettings

    defaults = CorrectionSettings()
    return CorrectionSettings(
        behavior=args.behavior,
        method=args.method,
        level=args.level,
        count=getattr(args, "count", None) or defaults.count,
        target_modules=tuple(args.target_modules) if args.target_modules else None,
        absolute=args.absolute,
        objective=args.objective,
        protect_general=defaults.protect_general if args.protect_general is None else args.protect_general,
        threshold=args.threshold,
        focus=args.focus,
        n_candidates=args.candidates,
        n_general=args.n_general,
        n_eval_prompts=args.eval_prompts,
        n_eval_texts=args.eval_texts,
        split=args.split or defaults.split,
        max_new_tokens=args.max_new_tokens,
        max_length=args.max_length or defaults.max_length,
        batch_size=args.batch_size or defaults.batch_size,
        random_seeds=args.random_seeds,
        controls=None if args.controls is None else tuple(args.controls),
        aura=args.aura,
        dampen=args.dampen,
        tasks=()
        if args.tasks.strip().lower() == "none"
        else tuple(t.strip() for t in args.tasks.split(",") if t.strip()),
        task_limit=args.task_limit,
        seed=args.seed,
    )
