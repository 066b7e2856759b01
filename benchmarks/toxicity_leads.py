"""The leads toward a stronger toxicity correction, side by side on the dev split (issue: beat AurA);
``--behavior repetition --level weight`` runs the same leads for repetition (no AurA, no dampening).

One set of references, one LRP attribution of the toxic references and of general text; the rows
differ only in how the ``count`` neurons are chosen or treated, and every row is measured on the
same dev prompts, texts and questions (per-item outcomes, so the report has paired intervals):

- ``lrp``: the shipped rule (signed R, Eq. 7, top half of |R_general| protected, units cut);
- ``lrp dampen D``: the same units kept at scale D instead of cut (soft masks);
- ``lrp per token``: both relevances per explained token instead of per reference (a toxic-word
  reference explains 1–2 tokens, a general text ~63, so plain Eq. 7 is dominated by general text);
- ``lrp vs non-toxic``: general relevance from the *non-toxic* continuations of the same candidate
  prompts (paired references) instead of BoolQ passages; ``… per token`` both changes;
- ``lrp, non-toxic protected`` / ``lrp vs non-toxic per token, general protected`` (``--leads
  protect``): one contrast as above, and the units most relevant to the *other* general set
  (paired references, BoolQ) kept as well — protect what keeps continuations clean and what
  general text needs at once;
- ``lrp among experts`` (``--leads experts``): the shipped rule among AurA's experts only (AUROC
  > 0.5): units that respond more to toxic text, ranked by what LRP says they cause;
- ``aura`` / ``aura (top-k)``: AurA's dampening of every neuron with AUROC > 0.5 from the toxic vs
  non-toxic continuations, and its top-``count`` cut;
- ``random``: ``count`` random units among LRP's candidates (seeds);
- ``lrp H heads`` / ``lrp H heads + neurons`` (``--leads heads``, ``--heads H ...``): the H heads of
  head-level LRP (same references, same rule), cut alone and together with ``lrp``'s neurons
  (prompt copying runs through attention: ``benchmarks/toxicity_sources.py``);
- ``lrp + N sampled`` (``--leads sampled``): more undesired references — N sampled continuations
  per reference prompt (nucleus 0.9, temperature 1) added to the greedy ones, focused on their
  toxic words the same way, against the same general relevance;
- ``lrp 2 rounds`` (``--leads rounds``): half the count cut, the references found again on the
  cut model (the toxicity it left), attributed there, and the other half cut;
- ``lrp · OBJECTIVE`` (``--leads objectives``, ``--objectives ...``): both relevances explaining
  another output than the next tokens' logits (e.g. ``next_token_logprob``: what raises the toxic
  word's probability, not what raises every logit; :mod:`hf_sparc.attribution.objectives`).

    python benchmarks/toxicity_leads.py --output runs/leads-dev --record docs/results/toxicity_leads_dev.json

Choices are made on these numbers, so the leads run on dev only. ``--compare`` measures the fixed
comparison instead — the shipped LRP rule, its units dampened, AurA, AurA's top-``count`` cut,
Gradient×Input and random (both among LRP's candidates) — which may read the locked test split:

    python benchmarks/toxicity_leads.py --compare --split test --random-seeds 5 \
        --output runs/aura-test --record docs/results/toxicity_vs_aura_test.json
"""

from __future__ import annotations

import argparse
import copy
import shutil
import sys
import time
from dataclasses import replace

import hf_sparc
from hf_sparc.attribution import OBJECTIVES
from hf_sparc.behaviors import own_references
from hf_sparc.cli._common import load_model
from hf_sparc.metrics import Sampling
from hf_sparc.workflows._experiment import AURA_RULES, prepare_experiment
from hf_sparc.workflows.correction import CorrectionResult, CorrectionSettings, _mean_rows

LEADS = ("general", "protect", "experts", "heads", "sampled", "rounds", "objectives")


def per_explained_token(rel: hf_sparc.Relevance) -> hf_sparc.Relevance:
    """Relevance per explained token instead of per reference."""
    return rel / (rel.info.n_tokens / rel.info.n_samples)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--behavior", default="toxicity", choices=["toxicity", "repetition"])
    parser.add_argument("--level", default="neuron", choices=["neuron", "weight"])
    parser.add_argument("--target-modules", nargs="+", default=None, help="module suffixes (default: all)")
    parser.add_argument("--count", type=int, default=CorrectionSettings.count)
    parser.add_argument("--dampen", type=float, nargs="*", default=[0.5])
    parser.add_argument("--random-seeds", type=int, default=3)
    parser.add_argument("--task-limit", type=int, default=CorrectionSettings.task_limit)
    parser.add_argument(
        "--leads", nargs="*", choices=LEADS, default=["general"], help="which lead rows (see above)"
    )
    parser.add_argument("--samples", type=int, default=4, help="sampled continuations per prompt")
    parser.add_argument("--objectives", nargs="+", default=["next_token_logprob", "next_token_centered"],
                        choices=sorted(OBJECTIVES), help="what the objective rows explain")  # fmt: skip
    parser.add_argument("--heads", type=int, nargs="+", default=[2, 6], help="head counts of the head rows")
    parser.add_argument("--controls", nargs="+", choices=["gradient", "random"], default=None,
                        help="controls in LRP's candidates (default: random; --compare: both)")  # fmt: skip
    parser.add_argument("--no-aura", dest="aura", action="store_false", help="leave out AurA's rows")
    parser.add_argument("--compare", action="store_true", help="the fixed comparison rows (see above)")
    parser.add_argument("--split", default="dev", choices=["dev", "test"], help="test: --compare only")
    parser.add_argument("--output", default="runs/toxicity-leads")
    parser.add_argument("--record", default=None, help="also copy report.json here")
    args = parser.parse_args(argv)
    if args.split == "test" and not args.compare:
        parser.error("the leads are where choices are made: dev only (--compare may read test)")
    if args.level == "weight" and (args.dampen or args.aura):
        parser.error("weight-level masks are binary and AurA scores neurons: add --dampen --no-aura")
    start = time.time()

    model, tokenizer = load_model(args.model, "cpu", "float32")
    settings = CorrectionSettings(
        behavior=args.behavior, level=args.level, split=args.split, count=args.count, controls=("random",),
        random_seeds=args.random_seeds, task_limit=args.task_limit,
        target_modules=tuple(args.target_modules) if args.target_modules else None,
    )  # fmt: skip
    experiment = prepare_experiment(model, tokenizer, settings)
    s = experiment.settings
    (lrp,) = experiment.fit("lrp", s.count)
    selections = {"lrp": [lrp.masks]}
    rules = {"base": "", "lrp": "own (protect 0.5 of |lrp R_general|)"}
    for scale in args.dampen:
        selections[f"lrp dampen {scale:g}"] = [lrp.masks.dampened(scale)]
        rules[f"lrp dampen {scale:g}"] = f"lrp's units, kept at {scale:g}"
    if not args.compare and {"general", "protect"} & set(args.leads):
        _add_leads(experiment, lrp, args.leads, selections, rules)
    if not args.compare and "experts" in args.leads:
        _add_expert_lead(experiment, lrp, selections, rules)
    if not args.compare and "heads" in args.leads:
        _add_head_leads(experiment, lrp, args.heads, selections, rules)
    if not args.compare and "objectives" in args.leads:
        _add_objective_leads(experiment, args.objectives, selections, rules)
    if not args.compare and "sampled" in args.leads:
        _add_sampled_lead(experiment, lrp, args.samples, selections, rules)
    if not args.compare and "rounds" in args.leads:
        _add_rounds_lead(experiment, lrp, selections, rules)
    for name, masks in experiment.fit_aura(s.count).items() if args.aura else ():
        selections[name] = [masks]
        rules[name] = AURA_RULES[name]
    pool = lrp.candidate_pool()
    for control in args.controls or (("gradient", "random") if args.compare else ("random",)):
        pruners = experiment.fit(control, s.count, protect_general=0.0)
        selections[control] = [p.select(count=s.count, pool=pool) for p in pruners]
        rules[control] = "lrp's candidates"

    with experiment.counting(1 + sum(len(m) for m in selections.values())):
        measurements = {"base": [experiment.measure(None)]}
        measurements.update(
            {name: [experiment.measure(m) for m in masks] for name, masks in selections.items()}
        )
    rows = {name: _mean_rows([m.values for m in runs]) for name, runs in measurements.items()}
    settings = replace(s, extra={"benchmark": "toxicity_leads", "compare": args.compare})
    result = CorrectionResult(
        settings, rows, lrp.masks, experiment.reference_summary(), experiment.behavior.metric.name,
        experiment.references, measurements, rules, selections,
    )  # fmt: skip
    minutes = (time.time() - start) / 60
    extra = {"model": args.model, "minutes": minutes, "command": "python " + " ".join(sys.argv)}
    kind = "LRP against AurA" if args.compare else "leads"
    title = f"{s.behavior.capitalize()}: {kind} on the {s.split} split"
    result.save(args.output, title, extra=extra)
    if args.record:
        shutil.copyfile(f"{args.output}/report.json", args.record)
    print(result.table())
    print(f"{minutes:.1f} min; report in {args.output}")


def _lrp(experiment, texts, max_length: int, objective: str = "next_token") -> hf_sparc.Relevance:
    """LRP relevance of ``texts`` at the experiment's level and modules (as its pruners compute it)."""
    s = experiment.settings
    return hf_sparc.attribute(
        experiment.model, texts, tokenizer=experiment.tokenizer, method="lrp", level=s.level,
        target_modules=list(s.target_modules) if s.target_modules else None,
        batch_size=max(1, s.batch_size // 2), max_length=max_length, objective=objective,
    )  # fmt: skip


def _add_leads(experiment, lrp, groups: list[str], selections: dict, rules: dict) -> None:
    """The dev-only leads on general relevance. ``"general"``: per-token relevance, paired (e.g.
    non-toxic) general references, both. ``"protect"``: the units most relevant to *either*
    general set are never cut (the top ``protect_general`` share of each), contrasting with BoolQ
    as shipped, or with the paired references per token."""
    s = experiment.settings
    undesired, general = lrp.relevance["undesired"], lrp.relevance["general"]
    _, non_toxic = experiment.references.contrast()
    paired = _lrp(experiment, non_toxic, s.reference_max_length)
    other = {"toxicity": "non-toxic", "repetition": "non-repetitive"}[s.behavior]

    def contrastive(und, gen, pool=None):
        return hf_sparc.select_contrastive(
            und, gen, count=s.count, protect_general=s.protect_general, pool=pool
        )

    if "general" in groups:
        selections["lrp per token"] = [
            contrastive(per_explained_token(undesired), per_explained_token(general))
        ]
        rules["lrp per token"] = "own, relevance per explained token"
        selections[f"lrp vs {other}"] = [contrastive(undesired, paired)]
        rules[f"lrp vs {other}"] = f"own, general = {len(non_toxic)} {other} continuations"
        selections[f"lrp vs {other} per token"] = [
            contrastive(per_explained_token(undesired), per_explained_token(paired))
        ]
        rules[f"lrp vs {other} per token"] = "own, both changes"
    if "protect" in groups:
        selections[f"lrp, {other} protected"] = [
            contrastive(undesired, general, hf_sparc.candidate_pool(paired, s.protect_general))
        ]
        rules[f"lrp, {other} protected"] = f"own, and the top {s.protect_general:g} of |R_{other}| kept"
        name = f"lrp vs {other} per token, general protected"
        selections[name] = [
            contrastive(
                per_explained_token(undesired),
                per_explained_token(paired),
                hf_sparc.candidate_pool(general, s.protect_general),
            )
        ]
        rules[name] = f"both changes, and the top {s.protect_general:g} of |R_general| kept"


def _add_expert_lead(experiment, lrp, selections: dict, rules: dict) -> None:
    """The shipped rule among AurA's experts only (neurons with AUROC > 0.5 for toxic vs non-toxic
    continuations): units that respond more to toxic text, ranked by what LRP says they cause."""
    s = experiment.settings
    experts = {name: scores > 0.5 for name, scores in experiment.expertise().items()}
    undesired, general = lrp.relevance["undesired"], lrp.relevance["general"]
    cut = hf_sparc.select_contrastive(
        undesired, general, count=s.count, protect_general=s.protect_general, pool=experts
    )
    selections["lrp among experts"] = [cut]
    n_experts = sum(int(e.sum()) for e in experts.values())
    rules["lrp among experts"] = f"own, and AUROC > 0.5 ({n_experts} neurons)"


def _add_head_leads(experiment, lrp, counts: list[int], selections: dict, rules: dict) -> None:
    """Head-level LRP's top heads, cut alone and together with ``lrp``'s neurons (two adapters)."""
    (heads,) = experiment.fit("lrp", max(counts), level="head")
    for count in counts:
        cut = heads.select(count=count)
        selections[f"lrp {count} heads"] = [cut]
        rules[f"lrp {count} heads"] = "own, head level"
        selections[f"lrp {count} heads + neurons"] = [(cut, lrp.masks)]
        rules[f"lrp {count} heads + neurons"] = "both cuts at once"


def _add_sampled_lead(experiment, lrp, samples: int, selections: dict, rules: dict) -> None:
    """The greedy references plus the toxic words of ``samples`` sampled continuations per prompt."""
    s = experiment.settings
    words = own_references(
        experiment.model, experiment.tokenizer, s.behavior, n_candidates=s.n_candidates, focus=s.focus,
        threshold=experiment.references.threshold, max_new_tokens=s.max_new_tokens, batch_size=s.batch_size,
        scorer=experiment.scorer, seed=s.seed, sampling=Sampling(n=samples, seed=s.seed),
    )  # fmt: skip
    undesired = _lrp(experiment, list(experiment.references) + list(words), s.reference_max_length)
    name = f"lrp + {samples} sampled"
    selections[name] = [
        hf_sparc.select_contrastive(
            undesired, lrp.relevance["general"], count=s.count, protect_general=s.protect_general
        )
    ]
    rules[name] = (
        f"own, undesired = {len(experiment.references)} greedy + {len(words)} sampled references "
        f"({words.n_continuations} of {words.n_candidates} sampled continuations shown)"
    )


def _add_rounds_lead(experiment, lrp, selections: dict, rules: dict) -> None:
    """Half the count cut, references found again on the cut model, the other half cut there."""
    s = experiment.settings
    first_count = s.count // 2
    first = hf_sparc.select_contrastive(
        lrp.relevance["undesired"], lrp.relevance["general"], count=first_count,
        protect_general=s.protect_general,
    )  # fmt: skip
    cut = hf_sparc.apply_masks(copy.deepcopy(experiment.model), first).merge_and_unload()
    references = own_references(
        cut, experiment.tokenizer, s.behavior, n_candidates=s.n_candidates, focus=s.focus,
        threshold=s.threshold, max_new_tokens=s.max_new_tokens, batch_size=s.batch_size,
        scorer=experiment.scorer, seed=s.seed,
    )  # fmt: skip
    (second,) = replace(experiment, model=cut, references=references).fit("lrp", s.count - first_count)
    selections["lrp 2 rounds"] = [first.union(second.masks)]
    rules["lrp 2 rounds"] = (
        f"own; {first_count} cut, then {s.count - first_count} from {len(references)} references found again"
    )


def _add_objective_leads(experiment, objectives: list[str], selections: dict, rules: dict) -> None:
    """The shipped rule on relevance of both reference sets explaining each of ``objectives``."""
    for objective in objectives:
        s = replace(experiment.settings, objective=objective)
        (pruner,) = replace(experiment, settings=s).fit("lrp", s.count)
        selections[f"lrp · {objective}"] = [pruner.masks]
        rules[f"lrp · {objective}"] = f"own, both relevances explain {objective}"


if __name__ == "__main__":
    main()
