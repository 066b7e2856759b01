"""What the correction pipeline needs to know about one behaviour, as one object.

A :class:`Behavior` says where its candidate items come from (a reference split and the held-out
dev and test splits of :func:`hf_sparc.data.split_items`), how undesired references are found
among them, which words of a reference are the undesired ones (for
:func:`hf_sparc.behaviors.focus_on_words`), and which metrics measure it on held-out items, each
with its direction. :class:`GeneratedBehavior` is the paper's kind:
continue prompts greedily, score each continuation, keep those past a threshold. A new
behaviour is one subclass in one file plus one line in the registry
(:data:`hf_sparc.behaviors.BEHAVIORS`).
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Literal, overload

from torch import nn

from hf_sparc.data.builtin import Split, builtin_dataset
from hf_sparc.metrics import PromptsLike, Sampling, ScorerLike, generate_continuations
from hf_sparc.metrics._common import progress_bar, prompt_texts

Focus = Literal["continuation", "words"]
FOCUSES: tuple[str, ...] = ("continuation", "words")


@dataclass(frozen=True)
class Metric:
    """A number reported on held-out data, and which way is better.

    Attributes:
        name: Key in the measured rows (e.g. ``"toxic_rate"``).
        higher_is_better: Direction of improvement.
        ideal: Where improvement stops, if anywhere (e.g. 0.5 for a stereotype rate: an
            unbiased model prefers either sentence of a pair equally often). ``None``: none.
    """

    name: str
    higher_is_better: bool
    ideal: float | None = None

    def better(self, a: float, b: float) -> bool:
        """Whether ``a`` is strictly better than ``b`` (closer to ``ideal`` when there is one)."""
        if self.ideal is not None:
            return abs(a - self.ideal) < abs(b - self.ideal)
        return a > b if self.higher_is_better else a < b

    @property
    def direction(self) -> str:
        """``"higher is better"``, ``"lower is better"`` or e.g. ``"lower is better, toward 0.5"``."""
        word = "higher" if self.higher_is_better else "lower"
        return f"{word} is better" + ("" if self.ideal is None else f", toward {self.ideal:g}")


def mean_outcomes(outcomes: dict[str, list[float]]) -> dict[str, float]:
    """Per metric, the mean of its per-item outcomes (:meth:`Behavior.measure`), NaN ones left
    out (NaN when all are)."""
    means = {}
    for name, values in outcomes.items():
        finite = [value for value in values if math.isfinite(value)]
        means[name] = sum(finite) / len(finite) if finite else math.nan
    return means


PERPLEXITY = Metric("perplexity", higher_is_better=False)
"""Perplexity on held-out general text: what every correction must not raise much."""


@dataclass(frozen=True)
class BehaviorSet(Sequence[dict[str, str]]):
    """The pairs that showed a behaviour, and what was done to find them.

    Indexing, ``len`` and iteration give the kept ``{"prompt", "continuation"}`` pairs.

    Attributes:
        pairs: Kept pairs, in candidate order.
        behavior: Name of the behaviour (a key of :data:`hf_sparc.behaviors.BEHAVIORS`).
        threshold: The behaviour's threshold (e.g. kept when toxicity >= threshold, RUR < threshold).
        scorer: Name of the scorer (``"rur"`` for repetition).
        max_new_tokens: Generation length used.
        limit: The ``limit`` asked for (``None``: none).
        n_candidates: Continuations scored (fewer than given when ``limit`` stopped early): one per
            candidate, or ``n`` per candidate when found among sampled continuations
            (:class:`hf_sparc.metrics.Sampling`; candidate i's j-th is continuation ``i * n + j``).
        scores: Score of every continuation, in order (``nan``: empty continuation, RUR undefined).
        kept: Continuation index of each pair (the candidate's index for greedy continuations).
        focus: What a pair's continuation is: the whole ``"continuation"``, or one undesired word
            of it (``"words"``, see :func:`hf_sparc.behaviors.focus_on_words`).
        others: The candidates that did *not* show the behaviour (non-empty continuations
            below the threshold), whole, in candidate order: contrast sentences from the same
            prompts (what AurA's expertise needs as negatives, see :func:`hf_sparc.expertise`).
        unfocused: ``focus="words"``: the whole pairs the word pairs were cut from.
    """

    pairs: list[dict[str, str]]
    behavior: str
    threshold: float
    scorer: str
    max_new_tokens: int
    limit: int | None
    n_candidates: int
    scores: list[float] = field(repr=False)
    kept: list[int] = field(repr=False)
    focus: Focus = "continuation"
    others: list[dict[str, str]] = field(default_factory=list, repr=False)
    unfocused: list[dict[str, str]] = field(default_factory=list, repr=False)

    @property
    def n_kept(self) -> int:
        return len(self.pairs)

    @property
    def n_continuations(self) -> int:
        """Continuations that contributed at least one pair."""
        return len(set(self.kept))

    def contexts(self) -> list[dict[str, str]]:
        """One pair per contributing continuation, without repeated text: for ``focus="words"``
        the pair of each continuation that reaches furthest into it (its prompt + continuation
        contains every other pair of that continuation), else the pairs themselves. What to read
        activations on (e.g. :func:`hf_sparc.workflows.insight.unit_contexts`) without counting a
        shared prefix once per word."""
        if self.focus == "continuation":
            return list(self.pairs)
        furthest: dict[int, dict[str, str]] = {}
        for pair, candidate in zip(self.pairs, self.kept, strict=True):
            if candidate not in furthest or len(pair["prompt"]) > len(furthest[candidate]["prompt"]):
                furthest[candidate] = pair
        return list(furthest.values())

    def contrast(self) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
        """Whole prompt + continuation pairs that showed the behaviour, and those that did not
        (:attr:`others`), from the same candidates: sentences with and without it."""
        shown = self.unfocused if self.focus != "continuation" else self.pairs
        return list(shown), list(self.others)

    @overload
    def __getitem__(self, index: int) -> dict[str, str]: ...
    @overload
    def __getitem__(self, index: slice) -> list[dict[str, str]]: ...
    def __getitem__(self, index: int | slice) -> dict[str, str] | list[dict[str, str]]:
        return self.pairs[index]

    def __len__(self) -> int:
        return len(self.pairs)

    def summary(self) -> dict[str, Any]:
        """Everything but the pairs and per-candidate lists, plus ``n_kept``: a line for a report."""
        info = asdict(self)
        for key in ("pairs", "scores", "kept", "others", "unfocused"):
            del info[key]
        return {
            **info,
            "n_kept": self.n_kept,
            "n_continuations": self.n_continuations,
            "n_others": len(self.others),
        }


class Behavior(ABC):
    """One behaviour to correct: its data, how references are found, its words and its metrics.

    Class attributes a subclass sets: ``name``, ``default_threshold``, ``default_focus`` and
    ``metrics`` (the first is the headline metric of reports and of a sweep's pick).
    """

    name: ClassVar[str]
    default_threshold: ClassVar[float]
    default_focus: ClassVar[Focus]
    metrics: ClassVar[tuple[Metric, ...]]
    uses_scorer: ClassVar[bool] = False
    """Whether ``scorer=`` (a toxicity classifier, see :func:`hf_sparc.metrics.toxicity_scorer`) applies."""

    @property
    def metric(self) -> Metric:
        """The headline metric."""
        return self.metrics[0]

    @property
    def table_metrics(self) -> tuple[str, ...]:
        """Metrics with a column (interval, paired tests) in correction tables: the headline one
        unless a subclass names more (e.g. the same rate under two scorers)."""
        return (self.metric.name,)

    def metric_named(self, name: str) -> Metric:
        """The :class:`Metric` reported under ``name`` (this behaviour's, or perplexity)."""
        for metric in (*self.metrics, PERPLEXITY):
            if metric.name == name:
                return metric
        raise KeyError(f"{self.name} reports no metric {name!r}.")

    def check_scorer(self, scorer: ScorerLike) -> None:
        """Refuse ``scorer`` for a behaviour that is not scored by a classifier."""
        if scorer is not None and not self.uses_scorer:
            raise ValueError(f"scorer= applies to classifier-scored behaviours only; {self.name} needs none.")

    @abstractmethod
    def candidates(self, split: Split = "reference", seed: int = 0) -> list[Any]:
        """Built-in items of ``split`` (see :func:`hf_sparc.data.split_items`): the reference
        split gives the candidates of the undesired references, the dev split the held-out items
        that :meth:`measure` takes while choices are made, the test split those of a final report."""

    def probes(self, n: int = 4, seed: int = 0) -> list[str]:
        """``n`` held-out texts to compare two models' logits on (e.g. a reloaded adapter)."""
        return prompt_texts(self.candidates("dev", seed)[:n])

    @abstractmethod
    def find_references(
        self,
        model: nn.Module,
        tokenizer,
        candidates: Sequence[Any],
        *,
        threshold: float,
        max_new_tokens: int,
        limit: int | None,
        scorer: ScorerLike,
        batch_size: int,
        progress: bool,
        sampling: Sampling | None = None,
    ) -> BehaviorSet:
        """The candidates where ``model`` shows the behaviour, as prompt/continuation pairs
        (``sampling``: from sampled continuations, for behaviours that generate)."""

    @abstractmethod
    def flag_words(self, words: list[str], threshold: float, scorer: ScorerLike) -> list[bool]:
        """Per word of one reference continuation (each with its leading white space): is it
        undesired by itself?"""

    @abstractmethod
    def measure(
        self,
        model: nn.Module,
        tokenizer,
        items: Sequence[Any],
        *,
        max_new_tokens: int,
        batch_size: int,
        scorer,
    ) -> dict[str, list[float]]:
        """Per held-out item, the outcome behind every metric of :attr:`metrics` (perplexity is
        measured apart): a metric's value is the mean of its outcomes, NaN ones left out (e.g.
        toxic 0/1 per prompt for the toxic rate). Kept per item for paired statistics."""


class GeneratedBehavior(Behavior):
    """A behaviour seen in greedy continuations of built-in prompts (the paper's references).

    A candidate prompt is kept when its continuation is non-empty and its score passes the
    threshold (:meth:`shows`). Subclasses set ``dataset`` (a built-in dataset of prompts) and
    implement :meth:`scoring` and :meth:`shows`.
    """

    dataset: ClassVar[str]

    def candidates(self, split: Split = "reference", seed: int = 0) -> list[Any]:
        return builtin_dataset(self.dataset, split, seed=seed)

    @abstractmethod
    def scoring(self, scorer: ScorerLike) -> tuple[str, Callable[[list[dict[str, Any]]], list[float]]]:
        """Name and function scoring a list of generations (dicts of
        :func:`hf_sparc.metrics.generate_continuations`)."""

    @abstractmethod
    def shows(self, score: float, threshold: float) -> bool:
        """Whether a continuation with ``score`` shows the behaviour."""

    def find_references(
        self,
        model: nn.Module,
        tokenizer,
        candidates: PromptsLike,
        *,
        threshold: float,
        max_new_tokens: int,
        limit: int | None,
        scorer: ScorerLike,
        batch_size: int,
        progress: bool,
        sampling: Sampling | None = None,
    ) -> BehaviorSet:
        texts = prompt_texts(candidates)
        per_prompt = sampling.n if sampling else 1
        scorer_name, score = self.scoring(scorer)
        pairs: list[dict[str, str]] = []
        others: list[dict[str, str]] = []
        kept: list[int] = []
        scores: list[float] = []
        with progress_bar(len(texts), f"hf_sparc {self.name} references", progress) as bar:
            for start in range(0, len(texts), batch_size):
                if limit is not None and len(pairs) >= limit:
                    break
                generations = generate_continuations(
                    model,
                    tokenizer,
                    texts[start : start + batch_size],
                    max_new_tokens=max_new_tokens,
                    batch_size=batch_size,
                    progress=False,
                    sampling=sampling,
                )
                for offset, (item, value) in enumerate(zip(generations, score(generations), strict=True)):
                    scores.append(value)
                    room = limit is None or len(pairs) < limit
                    pair = {"prompt": item["prompt"], "continuation": item["continuation"]}
                    if item["continuation_ids"] and self.shows(value, threshold) and room:
                        pairs.append(pair)
                        kept.append(start * per_prompt + offset)
                    elif item["continuation_ids"] and not self.shows(value, threshold):
                        others.append(pair)
                bar.update(len(generations) // per_prompt)
        return BehaviorSet(
            pairs=pairs,
            behavior=self.name,
            threshold=threshold,
            scorer=scorer_name,
            max_new_tokens=max_new_tokens,
            limit=limit,
            n_candidates=len(scores),
            scores=scores,
            kept=kept,
            others=others,
        )


def word_spans(text: str) -> list[tuple[int, int]]:
    """Spans of the words of ``text``, each with its leading white space (where BPE starts a token)."""
    return [match.span() for match in re.finditer(r"\s*\S+", text)]
