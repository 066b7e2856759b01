"""Behaviour correction with equal-size controls: the paper's experiment as one function.

``run_correction`` builds the undesired reference set from the model's own behaviour
(greedy continuations that score as toxic / repetitive), attributes it and general text,
selects the same number of components with LRP and with each control (Gradient×Input,
activation, magnitude, random over several seeds), and measures the behaviour and perplexity
on held-out data for every selection. Same count, same level, same evaluation data for all:
a win of LRP over the controls cannot be mere capacity loss.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from torch import nn

from hf_sparc.attribution import attribute
from hf_sparc.attribution.signals import METHODS, get_method
from hf_sparc.behaviors.references import Behavior, BehaviorSet, Focus
from hf_sparc.data.builtin import builtin_dataset
from hf_sparc.masks import Masks
from hf_sparc.metrics._common import progress_bar
from hf_sparc.selection import select, select_contrastive
from hf_sparc.tuner.model import apply_masks

# behaviour -> (built-in candidate prompts, metric reported)
_BEHAVIORS = {
    "toxicity": ("toxic-prompts", "toxic_rate"),
    "repetition": ("repetition-prompts", "mean_rur"),
}
HIGHER_IS_BETTER = {"toxic_rate": False, "mean_toxicity": False, "mean_rur": True, "perplexity": False}
"""Direction of each metric reported: RUR (unique share of generated tokens) rises as repetition falls."""
DEFAULT_FOCUS: dict[str, Focus] = {"toxicity": "words", "repetition": "continuation"}
"""What the undesired references explain by default, as measured on SmolLM2 (docs/RESULTS.md):
toxic words alone cut more toxicity than whole continuations at the same count; for repetition,
repeated words alone did no better than whole continuations."""
CONTROLS = ("gradient", "wanda", "activation", "magnitude", "random")
"""Every control the experiment knows; each run uses those that can score its level."""
DATA_CONTROLS = ("gradient", "activation", "wanda")


def default_controls(level: str) -> tuple[str, ...]:
    """The controls of :data:`CONTROLS` that can score ``level`` (e.g. Wanda only weights)."""
    return tuple(name for name in CONTROLS if level in METHODS[name].levels)


@dataclass
class CorrectionSettings:
    """Sizes and options of one correction run (all recorded in the report).

    Defaults are sized for a 2-core CPU and SmolLM2-135M (about 15 minutes): every held-in toxic
    prompt is a candidate (497; the built-in repetition set has 36), 128 general references
    (the paper's count), 192 held-out prompts (one prompt = 0.5 points of toxic rate; with 64,
    1.6 points made differences of a few prompts look large).
    """

    behavior: Behavior = "toxicity"
    method: str = "lrp"
    level: str = "neuron"
    count: int = 138
    # Module name suffixes, as in hf_sparc.attribute; the same for the main method and every control.
    target_modules: tuple[str, ...] | None = None
    # Signed R with the top half of general relevance protected: the best trade-off measured on
    # SmolLM2 (docs/RESULTS.md); plain Eq. 7 on |R| multiplied perplexity by 5.4.
    absolute: bool = False
    protect_general: float = 0.5
    # 0.5 for both behaviours: the paper's RUR threshold, and for toxicity a cut that the bimodal
    # alt-profanity-check scores pass far more often than the paper's Perspective 0.9.
    threshold: float | None = 0.5
    # "words": explain only the undesired words of each reference continuation
    # (behavior.focus_on_words); "continuation": every continuation token, as in the paper.
    # None: DEFAULT_FOCUS of the behaviour.
    focus: Focus | None = None
    n_candidates: int = 497
    n_general: int = 128
    n_eval_prompts: int = 192
    n_eval_texts: int = 32
    max_new_tokens: int = 32
    max_length: int = 64
    batch_size: int = 16
    random_seeds: int = 5
    # None: every control that can score ``level`` (see :func:`default_controls`).
    controls: tuple[str, ...] | None = None
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def reference_max_length(self) -> int:
        """Token budget of an undesired reference: a prompt of up to ``max_length`` tokens plus
        the ``max_new_tokens`` the model wrote after it, so no prompt token is cut."""
        return self.max_length + self.max_new_tokens


@dataclass
class CorrectionResult:
    """What :func:`run_correction` measured.

    ``rows`` maps a selection name (``"base"``, ``"lrp"``, ``"random"``, ...) to its metrics;
    random is the mean over seeds with ``*_sd`` standard deviations. ``masks`` holds the selection
    of the main method, ``references`` what the undesired reference set was made of.
    """

    settings: CorrectionSettings
    rows: dict[str, dict[str, float]]
    masks: Masks
    references: dict[str, Any]
    metric: str
    reference_pairs: BehaviorSet | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "settings": asdict(self.settings),
            "metric": self.metric,
            "rows": self.rows,
            "references": self.references,
            "pruned": self.masks.total(),
            "of": self.masks.size(),
        }

    def table(self) -> str:
        """Markdown table: behaviour metric and perplexity per selection, change vs base."""
        base = self.rows["base"]
        lines = [
            f"| selection | {self.metric} | Δ vs base | perplexity | Δ vs base |",
            "|---|---:|---:|---:|---:|",
        ]
        for name, row in self.rows.items():
            cells = [name]
            for key in (self.metric, "perplexity"):  # "pruned" is the same for all: checked in tests
                value, sd = row[key], row.get(f"{key}_sd")
                cells.append(f"{value:.4f}" + (f" ± {sd:.4f}" if sd is not None else ""))
                cells.append("" if name == "base" else f"{(value - base[key]) / base[key]:+.1%}")
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def markdown(self, title: str, notes: Sequence[str] = ()) -> str:
        """A report: the table, what the references were, the settings, then ``notes`` paragraphs."""
        settings = ", ".join(f"{key}={value!r}" for key, value in asdict(self.settings).items())
        return (
            "\n\n".join(
                [
                    f"# {title}",
                    self.table(),
                    f"References: {json.dumps(self.references)}",
                    f"Settings: {settings}",
                    *notes,
                ]
            )
            + "\n"
        )

    def save(
        self,
        folder: str | os.PathLike,
        title: str,
        notes: Sequence[str] = (),
        extra: dict[str, Any] | None = None,
    ) -> None:
        """``report.md``, ``plot.png`` and, last (it marks a complete run), ``report.json``.

        ``extra``: more entries for ``report.json`` (e.g. timing, model name).
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "report.md").write_text(self.markdown(title, notes))
        plot(self, str(folder / "plot.png"))
        (folder / "report.json").write_text(json.dumps({**self.to_dict(), **(extra or {})}, indent=2) + "\n")


def _evaluate(model: nn.Module, tokenizer, prompts, texts, s: CorrectionSettings, scorer) -> dict[str, float]:
    from hf_sparc.metrics import perplexity, repetition, toxicity

    common = dict(max_new_tokens=s.max_new_tokens, batch_size=s.batch_size, progress=False)
    if s.behavior == "toxicity":
        measured = toxicity(model, tokenizer, prompts, scorer=scorer, **common)
        row = {"toxic_rate": measured["toxic_rate"], "mean_toxicity": measured["mean_toxicity"]}
    else:
        row = {"mean_rur": repetition(model, tokenizer, prompts, **common)["mean_rur"]}
    row["perplexity"] = perplexity(
        model, tokenizer, texts, max_length=s.max_length, batch_size=s.batch_size, progress=False
    )
    return row


def _evaluate_masks(model, tokenizer, masks: Masks, prompts, texts, s, scorer) -> dict[str, float]:
    peft_model = apply_masks(model, masks, adapter_name="evaluation")
    try:
        return {**_evaluate(peft_model, tokenizer, prompts, texts, s, scorer), "pruned": masks.total()}
    finally:
        peft_model.unload()


def mean_and_sd(rows: Sequence[dict[str, float]]) -> tuple[dict[str, float], dict[str, float]]:
    """Per metric, the mean and the sample standard deviation (0 for one row) over ``rows``
    (e.g. the random control's seeds)."""
    keys = rows[0]
    mean = {key: statistics.fmean(row[key] for row in rows) for key in keys}
    sd = {key: statistics.stdev(row[key] for row in rows) if len(rows) > 1 else 0.0 for key in keys}
    return mean, sd


def _mean_rows(rows: list[dict[str, float]]) -> dict[str, float]:
    mean, sd = mean_and_sd(rows)
    return {**mean, **{f"{key}_sd": value for key, value in sd.items()}}


@dataclass
class _Experiment:
    """The data of one run: references from the model's own behaviour, general text, held-out sets."""

    model: nn.Module
    tokenizer: Any
    settings: CorrectionSettings
    scorer: Any
    references: BehaviorSet
    general: list
    prompts: list
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

    def measure(self, masks: Masks | None) -> dict[str, float]:
        """Behaviour metric and perplexity on the held-out sets, unpruned (``None``) or masked."""
        args = (self.prompts, self.texts, self.settings, self.scorer)
        if masks is None:
            row = _evaluate(self.model, self.tokenizer, *args)
        else:
            row = _evaluate_masks(self.model, self.tokenizer, masks, *args)
        if self._bar is not None:
            self._bar.update(1)
        return row

    def n_rankings(self, method: str) -> int:
        """How many selections :meth:`rankings` gives for ``method`` (random: one per seed)."""
        return self.settings.random_seeds if method == "random" else 1

    def rankings(self, method: str) -> list[Callable[[int], Masks]]:
        """``count -> masks`` for ``method``, one per random seed (one for every other method).

        Relevance is computed once here; each call only selects, so a sweep over counts costs one
        attribution per method.
        """
        s, model = self.settings, self.model
        targets = list(s.target_modules) if s.target_modules else None
        scope = dict(level=s.level, target_modules=targets)
        if method == "random":
            scores = [attribute(model, method="random", seed=seed, **scope) for seed in range(s.random_seeds)]
            return [partial(_select_lowest, rel) for rel in scores]
        if not METHODS[method].needs_data:  # e.g. magnitude: cut the least important by that score
            return [partial(_select_lowest, attribute(model, method=method, **scope))]
        common = dict(
            tokenizer=self.tokenizer,
            method=method,
            **scope,
            absolute=s.absolute,
            max_length=s.max_length,
            batch_size=max(1, s.batch_size // 2),
        )
        undesired = attribute(model, list(self.references), **common | {"max_length": s.reference_max_length})
        general = attribute(model, self.general, **common)

        def contrastive(count: int) -> Masks:
            return select_contrastive(
                undesired=undesired,
                general=general,
                count=count,
                model=model,
                protect_general=s.protect_general,
            )

        return [contrastive]

    @property
    def metric(self) -> str:
        """The behaviour metric reported: ``toxic_rate`` or ``mean_rur``."""
        return _BEHAVIORS[self.settings.behavior][1]

    def reference_summary(self) -> dict[str, Any]:
        summary = self.references.summary()
        summary["n_general"] = len(self.general)
        return summary


def _select_lowest(relevance, count: int) -> Masks:
    return select(relevance, count=count)


def prepare_experiment(
    model: nn.Module, tokenizer, settings: CorrectionSettings | None = None, *, scorer=None
) -> _Experiment:
    """Validate ``settings``, load the built-in splits and build the behaviour references.

    Shared by :func:`run_correction` and :func:`hf_sparc.workflows.sweep.run_sweep`: raises before any
    generation when a behaviour or control is unknown or cannot score the level.
    """
    from hf_sparc.behaviors import behavior_references, focus_on_words

    s = settings or CorrectionSettings()
    if s.behavior not in _BEHAVIORS:
        raise ValueError(f"Unknown behavior {s.behavior!r}; expected one of {list(_BEHAVIORS)}.")
    if s.focus is None:
        s = replace(s, focus=DEFAULT_FOCUS[s.behavior])
    if s.focus not in ("continuation", "words"):
        raise ValueError(f"Unknown focus {s.focus!r}; expected 'continuation' or 'words'.")
    get_method(s.method, s.level)
    if s.controls is None:
        s = replace(s, controls=default_controls(s.level))
    for control in s.controls:
        get_method(control, s.level)
    candidates_name = _BEHAVIORS[s.behavior][0]
    candidates = builtin_dataset(candidates_name, "reference", seed=s.seed)[: s.n_candidates]
    references = behavior_references(
        model,
        tokenizer,
        candidates,
        behavior=s.behavior,
        threshold=s.threshold,
        max_new_tokens=s.max_new_tokens,
        batch_size=s.batch_size,
        **({"scorer": scorer} if s.behavior == "toxicity" else {}),
    )
    if len(references) == 0:
        raise ValueError(
            f"None of {len(candidates)} candidate prompts made the model show {s.behavior} above the "
            "threshold; lower the threshold or use more candidates."
        )
    if s.focus == "words":
        n_continuations = len(references)
        references = focus_on_words(references, **({"scorer": scorer} if s.behavior == "toxicity" else {}))
        if len(references) == 0:
            raise ValueError(
                f"None of the {n_continuations} reference continuations has a word that shows {s.behavior} "
                "by itself (focus='words'); use focus='continuation' to explain whole continuations."
            )
    return _Experiment(
        model=model,
        tokenizer=tokenizer,
        settings=s,
        scorer=scorer,
        references=references,
        general=builtin_dataset("general", "reference", seed=s.seed)[: s.n_general],
        prompts=builtin_dataset(candidates_name, "evaluation", seed=s.seed)[: s.n_eval_prompts],
        texts=builtin_dataset("general", "evaluation", seed=s.seed)[: s.n_eval_texts],
    )


def run_correction(
    model: nn.Module, tokenizer, settings: CorrectionSettings | None = None, *, scorer=None
) -> CorrectionResult:
    """Run the correction experiment on built-in data; see the module docstring.

    Returns the metrics of the unpruned model, of the main method's selection and of every
    control, all at ``settings.count`` components of ``settings.level``. ``scorer``: toxicity
    scorer (see :func:`hf_sparc.metrics.toxicity_scorer`; default ``alt-profanity-check``).
    """
    experiment = prepare_experiment(model, tokenizer, settings, scorer=scorer)
    s = experiment.settings
    (main,) = experiment.rankings(s.method)
    masks = main(s.count)
    with experiment.counting(2 + sum(experiment.n_rankings(control) for control in s.controls)):
        rows = {"base": experiment.measure(None), s.method: experiment.measure(masks)}
        for control in s.controls:
            measured = [experiment.measure(rank(s.count)) for rank in experiment.rankings(control)]
            rows[control] = _mean_rows(measured) if control == "random" else measured[0]
    return CorrectionResult(
        s, rows, masks, experiment.reference_summary(), experiment.metric, experiment.references
    )


def plot(result: CorrectionResult, path: str) -> None:
    """Bar chart of the behaviour metric and perplexity per selection (random: mean ± sd)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result.rows)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, key in zip(axes, (result.metric, "perplexity"), strict=True):
        values = [result.rows[n][key] for n in names]
        errors = [result.rows[n].get(f"{key}_sd", 0.0) for n in names]
        colors = [
            "#888888" if n == "base" else "#d62728" if n == result.settings.method else "#1f77b4"
            for n in names
        ]
        ax.bar(names, values, yerr=errors, color=colors, capsize=3)
        ax.axhline(result.rows["base"][key], color="#444444", linestyle="--", linewidth=1)
        ax.set_title(f"{key} ({'lower' if key != 'mean_rur' else 'higher'} is better)")
        ax.tick_params(axis="x", rotation=30)
        if not all(math.isfinite(v) for v in values):
            ax.set_yscale("symlog")
    s = result.settings
    fig.suptitle(f"{s.behavior}: {s.count} {s.level}s pruned per selection (same count for every control)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
