"""Behaviour reference sets from the model's own behaviour (the paper's undesired references).

The paper explains what the model itself does wrong: it continues candidate prompts greedily
and keeps the prompt/continuation pairs that show the behaviour, e.g. the 93 RealToxicityPrompts
whose continuation scored at least 0.9 toxicity, or the 53 prompts whose continuation has a
response uniqueness ratio below 0.5. :func:`behavior_references` does this for any model; the
resulting :class:`BehaviorSet` is a sequence of ``{"prompt", "continuation"}`` dicts, the form
in which :func:`hf_sparc.attribute` and :class:`hf_sparc.SparcPruner` explain only the
continuation tokens, so it can be passed to them directly.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal, overload

from torch import nn

from hf_sparc.metrics import (
    PromptsLike,
    ScorerLike,
    generate_continuations,
    response_uniqueness_ratio,
    toxicity_scorer,
)
from hf_sparc.metrics._common import progress_bar, prompt_texts

Behavior = Literal["toxicity", "repetition"]
Focus = Literal["continuation", "words"]

DEFAULT_THRESHOLDS: dict[str, float] = {"toxicity": 0.9, "repetition": 0.5}
"""Paper defaults: toxicity score >= 0.9; response uniqueness ratio < 0.5."""


@dataclass(frozen=True)
class BehaviorSet(Sequence[dict[str, str]]):
    """The pairs that showed a behaviour, and what was done to find them.

    Indexing, ``len`` and iteration give the kept ``{"prompt", "continuation"}`` pairs.

    Attributes:
        pairs: Kept pairs, in candidate order.
        behavior: ``"toxicity"`` or ``"repetition"``.
        threshold: Kept when score >= threshold (toxicity) or RUR < threshold (repetition).
        scorer: Name of the scorer (``"rur"`` for repetition).
        max_new_tokens: Generation length used.
        limit: The ``limit`` asked for (``None``: none).
        n_candidates: Prompts continued and scored (fewer than given when ``limit`` stopped early).
        scores: Score of every candidate, in order (``nan``: empty continuation, RUR undefined).
        kept: Candidate index of each pair.
        focus: What a pair's continuation is: the whole generated ``"continuation"``, or one
            undesired word of it (``"words"``, see :func:`focus_on_words`).
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

    @property
    def n_kept(self) -> int:
        return len(self.pairs)

    @property
    def n_continuations(self) -> int:
        """Candidates whose continuation contributed at least one pair."""
        return len(set(self.kept))

    def contexts(self) -> list[dict[str, str]]:
        """One pair per contributing continuation, without repeated text: for ``focus="words"``
        the pair of each continuation that reaches furthest into it (its prompt + continuation
        contains every other pair of that continuation), else the pairs themselves. What to read
        activations on (e.g. :func:`hf_sparc.workflows.insight.unit_contexts`) without counting a shared
        prefix once per word."""
        if self.focus == "continuation":
            return list(self.pairs)
        furthest: dict[int, dict[str, str]] = {}
        for pair, candidate in zip(self.pairs, self.kept, strict=True):
            if candidate not in furthest or len(pair["prompt"]) > len(furthest[candidate]["prompt"]):
                furthest[candidate] = pair
        return list(furthest.values())

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
        for key in ("pairs", "scores", "kept"):
            del info[key]
        return {**info, "n_kept": self.n_kept, "n_continuations": self.n_continuations}


def _scoring(behavior: str, scorer: ScorerLike) -> tuple[str, Callable[[list[dict[str, Any]]], list[float]]]:
    """Name and function scoring a list of generations for ``behavior``."""
    if behavior == "toxicity":
        score = toxicity_scorer(scorer)
        return score.name, lambda generations: score([item["continuation"] for item in generations])
    if scorer is not None:
        raise ValueError("scorer= applies to behavior='toxicity' only; repetition is scored by RUR.")
    return "rur", lambda generations: [
        response_uniqueness_ratio(item["continuation_ids"]) for item in generations
    ]


def behavior_references(
    model: nn.Module,
    tokenizer,
    prompts: PromptsLike,
    *,
    behavior: Behavior = "toxicity",
    threshold: float | None = None,
    max_new_tokens: int = 32,
    limit: int | None = None,
    scorer: ScorerLike = None,
    batch_size: int = 8,
    progress: bool = True,
) -> BehaviorSet:
    """Continue candidate prompts greedily and keep the pairs where the model shows ``behavior``.

    A candidate is kept when its continuation is non-empty and its score passes the threshold:
    toxicity score (of the continuation alone) ``>= threshold``, or response uniqueness ratio
    ``< threshold``. Generation is as in :func:`hf_sparc.metrics.generate_continuations`
    (greedy, deterministic).

    Args:
        model: A causal LM or a ``PeftModel`` around one.
        tokenizer: The model's tokenizer.
        prompts: Candidate prompts: strings, or dicts with ``"prompt"`` (e.g. the
            ``"toxic-prompts"`` built-in dataset).
        behavior: ``"toxicity"`` or ``"repetition"``.
        threshold: Default 0.9 for toxicity, 0.5 for repetition (the paper's).
        max_new_tokens: Tokens generated per candidate, at most.
        limit: Stop once this many pairs are kept. Candidates are taken in order, one batch at a
            time, so at most one batch more than needed is generated; ``None`` continues all.
        scorer: Toxicity scorer, see :func:`hf_sparc.metrics.toxicity_scorer` (default:
            ``alt-profanity-check``). Not accepted for repetition.
        batch_size: Prompts per ``generate`` call.
        progress: Show a tqdm bar (also silenced by transformers' progress-bar setting).

    Returns:
        A :class:`BehaviorSet`; it may be empty, e.g. when the model is not toxic enough for the
        threshold (check ``n_kept`` and ``scores``).
    """
    if behavior not in DEFAULT_THRESHOLDS:
        raise ValueError(f"Unknown behavior {behavior!r}; use one of {sorted(DEFAULT_THRESHOLDS)}.")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be positive, got {limit}.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}.")
    threshold = DEFAULT_THRESHOLDS[behavior] if threshold is None else float(threshold)
    texts = prompt_texts(prompts)
    scorer_name, score = _scoring(behavior, scorer)

    def shows(value: float) -> bool:
        return value >= threshold if behavior == "toxicity" else value < threshold

    pairs: list[dict[str, str]] = []
    kept: list[int] = []
    scores: list[float] = []
    with progress_bar(len(texts), f"hf_sparc {behavior} references", progress) as bar:
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
            )
            for offset, (item, value) in enumerate(zip(generations, score(generations), strict=True)):
                scores.append(value)
                if item["continuation_ids"] and shows(value) and (limit is None or len(pairs) < limit):
                    pairs.append({"prompt": item["prompt"], "continuation": item["continuation"]})
                    kept.append(start + offset)
            bar.update(len(generations))
    return BehaviorSet(
        pairs=pairs,
        behavior=behavior,
        threshold=threshold,
        scorer=scorer_name,
        max_new_tokens=max_new_tokens,
        limit=limit,
        n_candidates=len(scores),
        scores=scores,
        kept=kept,
    )


def _words(text: str) -> list[tuple[int, int]]:
    """Spans of the words of ``text``, each with its leading white space (where BPE starts a token)."""
    return [match.span() for match in re.finditer(r"\s*\S+", text)]


def _repeated_words(words: list[str]) -> list[bool]:
    """Per word: does it repeat an earlier word of the same text (case and punctuation ignored)?"""
    seen: set[str] = set()
    flags = []
    for word in words:
        key = re.sub(r"\W+", "", word).lower()
        flags.append(bool(key) and key in seen)
        seen.add(key)
    return flags


def focus_on_words(references: BehaviorSet, *, scorer: ScorerLike = None) -> BehaviorSet:
    """The same references with only their undesired words explained: one pair per such word.

    A continuation's words are its white-space separated runs, each with its leading space. A
    word is undesired when it shows the behaviour by itself: for toxicity, its own toxicity score
    (``scorer``, default ``alt-profanity-check``) is at least ``references.threshold``; for
    repetition, it repeats an earlier word of the same continuation (case and punctuation
    ignored). Each becomes ``{"prompt": prompt + the continuation before the word,
    "continuation": word}``, so attribution explains the predictions of the undesired tokens
    alone, in the context where the model produced them, rather than every token of the
    continuation (most of which are ordinary). Continuations without such a word drop out
    (``n_continuations`` counts those that stay).

    Raises:
        ValueError: ``references`` are focused already, or ``scorer`` is given for repetition.
    """
    if references.focus != "continuation":
        raise ValueError(f"The references are focused on {references.focus!r} already.")
    if references.behavior == "toxicity":
        score = toxicity_scorer(scorer)

        def undesired(words: list[str]) -> list[bool]:
            return [value >= references.threshold for value in score([word.strip() for word in words])]

    elif scorer is not None:
        raise ValueError("scorer= applies to behavior='toxicity' only; repeated words need no scorer.")
    else:
        undesired = _repeated_words
    pairs: list[dict[str, str]] = []
    kept: list[int] = []
    for pair, candidate in zip(references.pairs, references.kept, strict=True):
        continuation = pair["continuation"]
        spans = _words(continuation)
        flags = undesired([continuation[start:end] for start, end in spans]) if spans else []
        for (start, end), flagged in zip(spans, flags, strict=True):
            if flagged:
                pairs.append(
                    {"prompt": pair["prompt"] + continuation[:start], "continuation": continuation[start:end]}
                )
                kept.append(candidate)
    return replace(references, pairs=pairs, kept=kept, focus="words")
