"""The data and selections of one behaviour experiment, shared by correction and sweep.

:func:`prepare_experiment` validates the settings, finds the undesired references with the
behaviour's own rule (:data:`hf_sparc.behaviors.BEHAVIORS`) and loads general text and the
held-out sets (of ``settings.split``: ``"dev"``, where every choice is made, or ``"test"``);
:meth:`BehaviorExperiment.fit` gets every selection, LRP and controls alike, from
:class:`hf_sparc.SparcPruner` — the one contrastive-prune path.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from torch import nn

from hf_sparc.attribution.expertise import expertise as neuron_expertise
from hf_sparc.attribution.objectives import get_objective
from hf_sparc.attribution.signals import METHODS, get_method
from hf_sparc.behaviors import (
    FOCUSES,
    Behavior,
    BehaviorSet,
    Focus,
    get_behavior,
    own_references,
)
from hf_sparc.behaviors.base import mean_outcomes
from hf_sparc.data.builtin import HELD_OUT_SPLITS, builtin_dataset, check_split
from hf_sparc.data.capability import capability_tasks
from hf_sparc.masks import Masks
from hf_sparc.metrics import text_nlls
from hf_sparc.metrics._common import progress_bar
from hf_sparc.metrics.capability import zero_shot_accuracy
from hf_sparc.relevance import Relevance
from hf_sparc.selection import select_aura
from hf_sparc.tuner.model import apply_masks
from hf_sparc.workflows.pruner import SparcConfig, SparcPruner

CONTROLS = ("gradient", "wanda", "activation", "magnitude", "random")
"""Every control the experiment knows; each run uses those that can score its level."""

AURA = "aura"
"""AurA (Suau et al., 2024) as a method: every neuron with AUROC > 0.5 dampened (see
:func:`hf_sparc.select_aura`); ``"aura (top-k)"`` is its fixed-count variant."""
AURA_TOP_K = "aura (top-k)"
AURA_RULES = {AURA: "all units, AUROC > 0.5 dampened", AURA_TOP_K: "all units, top AUROC cut"}
"""What each AurA row chooses from, as reports list it."""


def default_controls(level: str) -> tuple[str, ...]:
    """The controls of :data:`CONTROLS` that can score ``level`` (e.g. Wanda only weights)."""
    return tuple(name for name in CONTROLS if level in METHODS[name].levels)


@dataclass
class CorrectionSettings:
    """Sizes and options of one correction run (all recorded in the report).

    Defaults are sized for a 2-core CPU and SmolLM2-135M (35 minutes measured for 16 selections,
    about 2 minutes per measured selection): every held-in toxic
    prompt is a candidate (497; the built-in repetition set has 36), 128 general references
    (the paper's count), 192 held-out prompts (one prompt = 0.5 points of toxic rate; with 64,
    1.6 points made differences of a few prompts look large).

    ``split`` is the held-out split measured on (behaviour items and general text alike, see
    :mod:`hf_sparc.data.builtin`): ``"dev"`` (default) is where every choice of the method is
    made (counts, thresholds, options, the sweep's pick); ``"test"`` is locked, read only by a
    ``--split test`` run of a configuration fixed beforehand on dev, never to choose anything.
    """

    # A key of hf_sparc.behaviors.BEHAVIORS.
    behavior: str = "toxicity"
    method: str = "lrp"
    level: str = "neuron"
    count: int = 138
    # Module name suffixes, as in hf_sparc.attribute; the same for the main method and every control.
    target_modules: tuple[str, ...] | None = None
    # Signed R with the top half of general relevance protected: the best trade-off measured on
    # SmolLM2 (docs/RESULTS.md); plain Eq. 7 on |R| multiplied perplexity by 5.4.
    absolute: bool = False
    # What relevance explains (hf_sparc.attribution.objectives) for the method and every control.
    objective: str = "next_token"
    protect_general: float = 0.5
    # 0.5 for toxicity and repetition: the paper's RUR threshold, and for toxicity a cut that the
    # bimodal alt-profanity-check scores pass far more often than the paper's Perspective 0.9.
    # None: the behaviour's default_threshold.
    threshold: float | None = 0.5
    # "words": explain only the undesired words of each reference continuation
    # (hf_sparc.behaviors.focus_on_words); "continuation": every continuation token, as in the
    # paper. None: the behaviour's default_focus.
    focus: Focus | None = None
    n_candidates: int = 497
    n_general: int = 128
    # Held-out items measured (None: the whole split, 248 toxic prompts) and general texts.
    n_eval_prompts: int | None = None
    n_eval_texts: int = 64
    # The held-out split measured on: "dev" (choices are made here) or "test" (final report only).
    split: str = "dev"
    # Zero-shot multiple-choice tasks of hf_sparc.metrics.capability measured on every selection
    # (lm-evaluation-harness's protocol, computed directly), ``task_limit`` seeded questions each;
    # () skips them. Sized for 2 CPU cores and 16 selections (about a minute each); "mmlu" is
    # left out by default: SmolLM2-135M is at chance on it, and its long prompts cost most.
    tasks: tuple[str, ...] = ("piqa", "openbookqa", "commonsenseqa", "siqa")
    task_limit: int = 50
    max_new_tokens: int = 32
    max_length: int = 64
    batch_size: int = 16
    random_seeds: int = 5
    # None: every control that can score ``level`` (see :func:`default_controls`).
    controls: tuple[str, ...] | None = None
    # Rows of AurA and of AurA's top-``count`` variant, from the references' contrast sentences
    # (neuron level, behaviours with generated references). With method="aura" AurA is the main
    # row and there are no controls (they need the main method's candidates).
    aura: bool = True
    # Scale in (0, 1) the main method's selected units keep (soft masks) instead of 0; None: cut.
    dampen: float | None = None
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def reference_max_length(self) -> int:
        """Token budget of an undesired reference: a prompt of up to ``max_length`` tokens plus
        the ``max_new_tokens`` the model wrote after it, so no prompt token is cut."""
        return self.max_length + self.max_new_tokens


@dataclass
class Measurement:
    """One selection measured on the held-out sets.

    ``values``: every metric (behaviour metrics, ``perplexity``, ``accuracy`` = mean over tasks
    and ``accuracy:<task>``, ``pruned``). ``outcomes``: per held-out item, what each mean is
    made of (e.g. toxic 0/1 per prompt), plus ``nll``/``tokens`` per general text (perplexity is
    ``exp(sum(nll) / sum(tokens))``) and ``accuracy:<task>`` 0/1 per question — for paired
    statistics (:mod:`hf_sparc.reports.statistics`).
    """

    values: dict[str, float]
    outcomes: dict[str, list[float]]


def held_out_note(settings: CorrectionSettings) -> str:
    """One report line: which held-out split was measured, and what it may be used for."""
    if settings.split == "test":
        return (
            "Held-out data: the locked **test** split, the report of a configuration fixed beforehand "
            "on dev; choose nothing on these numbers."
        )
    return f"Held-out data: the **{settings.split}** split, where choices are made (test is not read)."


@dataclass
class BehaviorExperiment:
    """The data of one run: references from the model's own behaviour, general text, held-out sets."""

    model: nn.Module
    tokenizer: Any
    settings: CorrectionSettings
    behavior: Behavior
    scorer: Any
    references: BehaviorSet
    general: list
    held_out: list
    texts: list
    _bar: Any = field(default=None, repr=False)

    @contextmanager
    def counting(self, total: int) -> Iterator[None]:
        """A progress bar over the next ``total`` :meth:`measure` calls (each generates on every
        held-out prompt: minutes on a CPU, with no bar of its own)."""
        with progress_bar(total, "hf_sparc evaluating selections", True, unit="selection") as bar:
            self._bar = bar
            try:
                yield
            finally:
                self._bar = None

    def measure(self, masks: Masks | Sequence[Masks] | None) -> Measurement:
        """Behaviour metrics and perplexity on the held-out sets, unpruned (``None``) or masked.

        Several masks act together, each as its own adapter: one :class:`~hf_sparc.Masks` holds
        one level, so heads and neurons cut at once are two."""
        if masks is None:
            measured = self._evaluate(self.model)
        else:
            parts = [masks] if isinstance(masks, Masks) else list(masks)
            names = ["evaluation"] + [f"evaluation-{i}" for i in range(1, len(parts))]
            peft_model = self.model
            for name, part in zip(names, parts, strict=True):
                peft_model = apply_masks(peft_model, part, adapter_name=name)
            peft_model.base_model.set_adapter(names)
            try:
                measured = self._evaluate(peft_model)
            finally:
                peft_model.unload()
            measured.values["pruned"] = sum(part.total() for part in parts)
        if self._bar is not None:
            self._bar.update(1)
        return measured

    def _evaluate(self, model: nn.Module) -> Measurement:
        s = self.settings
        outcomes = self.behavior.measure(
            model, self.tokenizer, self.held_out, max_new_tokens=s.max_new_tokens, batch_size=s.batch_size,
            scorer=self.scorer,
        )  # fmt: skip
        values = mean_outcomes(outcomes)
        nlls, counts = text_nlls(
            model, self.tokenizer, self.texts, max_length=s.max_length, batch_size=s.batch_size,
            progress=False,
        )  # fmt: skip
        values["perplexity"] = math.exp(sum(nlls) / sum(counts))
        outcomes = {**outcomes, "nll": nlls, "tokens": [float(n) for n in counts]}
        if s.tasks:
            accuracy = zero_shot_accuracy(model, self.tokenizer, s.tasks, limit=s.task_limit, seed=s.seed,
                                          progress=False, backend="direct")  # fmt: skip
            for task, score in accuracy.tasks.items():
                outcomes[f"accuracy:{task}"] = [float(c) for c in score.correct]
                values[f"accuracy:{task}"] = score.accuracy
            values["accuracy"] = accuracy.mean_accuracy
        return Measurement(values, outcomes)

    def n_fits(self, method: str) -> int:
        """How many pruners :meth:`fit` gives for ``method`` (random: one per seed)."""
        return self.settings.random_seeds if method == "random" else 1

    def fit(
        self, method: str, count: int, *, protect_general: float | None = None, level: str | None = None
    ) -> list[SparcPruner]:
        """Pruners of ``method`` fitted for this experiment, one per random seed (one for every
        other method), each selecting ``count`` units; ``pruner.select(count=k)`` re-selects
        without attributing again, so a sweep over counts costs one attribution per method.

        Data methods select contrastively (undesired references vs general text, protecting
        ``protect_general``, default ``settings.protect_general``); data-free ones (magnitude,
        random) cut the lowest scores. A control re-selects within the main method's candidates
        with ``pruner.select(count=..., pool=main.candidate_pool())``. ``level``: instead of
        ``settings.level`` (e.g. heads to cut together with the main method's neurons).
        """
        s = self.settings
        seeds = range(s.random_seeds) if method == "random" else (0,)
        data = {}
        if METHODS[method].needs_data:
            data = {"undesired": list(self.references), "general": self.general}
        return [
            SparcPruner(
                SparcConfig(
                    method=method,
                    level=level or s.level,
                    count=count,
                    target_modules=list(s.target_modules) if s.target_modules else None,
                    absolute=s.absolute,
                    objective=s.objective,
                    protect_general=s.protect_general if protect_general is None else protect_general,
                    max_length=s.max_length,
                    undesired_max_length=s.reference_max_length,
                    batch_size=max(1, s.batch_size // 2),  # a backward pass needs more memory
                    seed=seed,
                )
            ).fit(self.model, self.tokenizer, **data)
            for seed in seeds
        ]

    def expertise(self) -> Relevance | None:
        """AurA's expertise (AUROC per MLP neuron) from :meth:`BehaviorSet.contrast` (whole toxic vs
        non-toxic continuations of the same candidates); None without them."""
        positive, negative = self.references.contrast()
        if not positive or not negative:
            return None
        s = self.settings
        return neuron_expertise(
            self.model, positive, negative, tokenizer=self.tokenizer,
            target_modules=list(s.target_modules) if s.target_modules else None,
            batch_size=s.batch_size, max_length=s.reference_max_length,
        )  # fmt: skip

    def fit_aura(self, count: int) -> dict[str, Masks]:
        """AurA's selection and its top-``count`` variant from :meth:`expertise` (empty without it)."""
        if (scores := self.expertise()) is None:
            return {}
        return {AURA: select_aura(scores), AURA_TOP_K: select_aura(scores, count=count)}

    def reference_summary(self) -> dict[str, Any]:
        summary = self.references.summary()
        summary["n_general"] = len(self.general)
        return summary


def _checked(settings: CorrectionSettings | None, scorer) -> tuple[CorrectionSettings, Behavior]:
    """Settings with the behaviour's defaults filled in; raises on anything unknown."""
    s = settings or CorrectionSettings()
    behavior = get_behavior(s.behavior)
    behavior.check_scorer(scorer)
    check_split(s.split, HELD_OUT_SPLITS, " to measure on")
    if s.focus is None:
        s = replace(s, focus=behavior.default_focus)
    if s.threshold is None:
        s = replace(s, threshold=behavior.default_threshold)
    if s.focus not in FOCUSES:
        raise ValueError(f"Unknown focus {s.focus!r}; expected one of {list(FOCUSES)}.")
    if s.dampen is not None and not 0 < s.dampen < 1:
        raise ValueError(f"dampen must be in (0, 1), got {s.dampen}.")
    get_objective(s.objective)
    if s.method == AURA:
        if s.level != "neuron" or s.dampen is not None or s.controls:
            raise ValueError(
                "method='aura' scores neurons, dampens by its own rule and runs without controls."
            )
        s = replace(s, controls=())
    else:
        get_method(s.method, s.level)
    if s.controls is None:
        s = replace(s, controls=default_controls(s.level))
    for control in s.controls:
        get_method(control, s.level)
    unknown = [task for task in s.tasks if task not in capability_tasks()]
    if unknown:
        raise ValueError(f"Unknown capability task(s) {unknown}; expected some of {capability_tasks()}.")
    return s, behavior


def prepare_experiment(
    model: nn.Module, tokenizer, settings: CorrectionSettings | None = None, *, scorer=None
) -> BehaviorExperiment:
    """Validate ``settings``, load the built-in splits and build the behaviour references.

    Shared by :func:`hf_sparc.workflows.correction.run_correction` and
    :func:`hf_sparc.workflows.sweep.run_sweep`: raises before any generation when a behaviour,
    focus or control is unknown or cannot score the level.
    """
    s, behavior = _checked(settings, scorer)
    references = own_references(
        model, tokenizer, s.behavior, n_candidates=s.n_candidates, focus=s.focus, threshold=s.threshold,
        max_new_tokens=s.max_new_tokens, batch_size=s.batch_size, scorer=scorer, seed=s.seed,
    )  # fmt: skip
    return BehaviorExperiment(
        model=model,
        tokenizer=tokenizer,
        settings=s,
        behavior=behavior,
        scorer=scorer,
        references=references,
        general=builtin_dataset("general", "reference", seed=s.seed)[: s.n_general],
        held_out=behavior.candidates(s.split, seed=s.seed)[: s.n_eval_prompts],
        texts=builtin_dataset("general", s.split, seed=s.seed)[: s.n_eval_texts],
    )
