"""Behaviours to correct, one :class:`Behavior` object each, and reference sets from the model's
own behaviour (the paper's undesired references).

The paper explains what the model itself does wrong: it continues candidate prompts greedily
and keeps the prompt/continuation pairs that show the behaviour, e.g. the 93 RealToxicityPrompts
whose continuation scored at least 0.9 toxicity, or the 53 prompts whose continuation has a
response uniqueness ratio below 0.5. :func:`behavior_references` does this for any model and any
behaviour of :data:`BEHAVIORS`; the resulting :class:`BehaviorSet` is a sequence of
``{"prompt", "continuation"}`` dicts, the form in which :func:`hf_sparc.attribute` and
:class:`hf_sparc.SparcPruner` explain only the continuation tokens, so it can be passed to them
directly.
"""

from __future__ import annotations

from dataclasses import replace

from torch import nn

from hf_sparc.behaviors.base import (
    FOCUSES,
    PERPLEXITY,
    Behavior,
    BehaviorSet,
    Focus,
    GeneratedBehavior,
    Metric,
    mean_outcomes,
    word_spans,
)
from hf_sparc.behaviors.bias import Bias
from hf_sparc.behaviors.repetition import Repetition
from hf_sparc.behaviors.toxicity import Toxicity
from hf_sparc.metrics import Sampling, ScorerLike

BEHAVIORS: dict[str, Behavior] = {
    "toxicity": Toxicity(),
    "repetition": Repetition(),
    "bias": Bias(),
}
"""Every behaviour the pipeline knows, by name (``--behavior`` choices of the CLI)."""

__all__ = [
    "BEHAVIORS",
    "FOCUSES",
    "PERPLEXITY",
    "Behavior",
    "BehaviorSet",
    "Focus",
    "GeneratedBehavior",
    "Metric",
    "behavior_references",
    "focus_on_words",
    "get_behavior",
    "mean_outcomes",
    "own_references",
]


def get_behavior(name: str) -> Behavior:
    """The registered :class:`Behavior` called ``name``.

    Raises:
        ValueError: Unknown ``name``; the message lists the known ones.
    """
    if name not in BEHAVIORS:
        raise ValueError(f"Unknown behavior {name!r}; use one of {sorted(BEHAVIORS)}.")
    return BEHAVIORS[name]


def behavior_references(
    model: nn.Module,
    tokenizer,
    prompts,
    *,
    behavior: str = "toxicity",
    threshold: float | None = None,
    max_new_tokens: int = 32,
    limit: int | None = None,
    scorer: ScorerLike = None,
    batch_size: int = 8,
    progress: bool = True,
    sampling: Sampling | None = None,
) -> BehaviorSet:
    """Keep the candidates where the model shows ``behavior``, as prompt/continuation pairs.

    For toxicity and repetition the candidates are prompts, continued greedily (as in
    :func:`hf_sparc.metrics.generate_continuations`); a candidate is kept when its continuation
    is non-empty and its score passes the threshold: toxicity score (of the continuation alone)
    ``>= threshold``, or response uniqueness ratio ``< threshold``. Other behaviours say what
    they keep in their class (see :data:`BEHAVIORS`).

    Args:
        model: A causal LM or a ``PeftModel`` around one.
        tokenizer: The model's tokenizer.
        prompts: Candidates: prompt strings, or dicts with ``"prompt"`` (e.g. the
            ``"toxic-prompts"`` built-in dataset), or the behaviour's own items
            (``get_behavior(name).candidates("reference")``).
        behavior: A key of :data:`BEHAVIORS` (``"toxicity"``, ``"repetition"``, ...).
        threshold: Default: the behaviour's ``default_threshold`` (0.9 for toxicity, 0.5 for
            repetition: the paper's).
        max_new_tokens: Tokens generated per candidate, at most.
        limit: Stop once this many pairs are kept. Candidates are taken in order, one batch at a
            time, so at most one batch more than needed is scored; ``None`` scores all.
        scorer: Toxicity scorer, see :func:`hf_sparc.metrics.toxicity_scorer` (default:
            ``alt-profanity-check``). Only for behaviours scored by a classifier.
        batch_size: Candidates per batch.
        progress: Show a tqdm bar (also silenced by transformers' progress-bar setting).
        sampling: Keep among ``sampling.n`` sampled continuations per candidate instead of the
            greedy one (more references from the same prompts; :class:`hf_sparc.metrics.Sampling`).
            Only for behaviours that generate (toxicity, repetition).

    Returns:
        A :class:`BehaviorSet`; it may be empty, e.g. when the model is not toxic enough for the
        threshold (check ``n_kept`` and ``scores``).
    """
    found = get_behavior(behavior)
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be positive, got {limit}.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}.")
    return found.find_references(
        model,
        tokenizer,
        prompts,
        threshold=found.default_threshold if threshold is None else float(threshold),
        max_new_tokens=max_new_tokens,
        limit=limit,
        scorer=scorer,
        batch_size=batch_size,
        progress=progress,
        sampling=sampling,
    )


def focus_on_words(references: BehaviorSet, *, scorer: ScorerLike = None) -> BehaviorSet:
    """The same references with only their undesired words explained: one pair per such word.

    A continuation's words are its white-space separated runs, each with its leading space. The
    behaviour decides which are undesired by themselves: for toxicity, a word whose own toxicity
    score (``scorer``, default ``alt-profanity-check``) is at least ``references.threshold``; for
    repetition, a word that repeats an earlier word of the same continuation (case and
    punctuation ignored). Each becomes ``{"prompt": prompt + the continuation before the word,
    "continuation": word}``, so attribution explains the predictions of the undesired tokens
    alone, in the context where the model produced them, rather than every token of the
    continuation (most of which are ordinary). Continuations without such a word drop out
    (``n_continuations`` counts those that stay).

    Raises:
        ValueError: ``references`` are focused already, or ``scorer`` is given for a behaviour
            not scored by a classifier.
    """
    if references.focus != "continuation":
        raise ValueError(f"The references are focused on {references.focus!r} already.")
    behavior = get_behavior(references.behavior)
    behavior.check_scorer(scorer)
    pairs: list[dict[str, str]] = []
    kept: list[int] = []
    for pair, candidate in zip(references.pairs, references.kept, strict=True):
        continuation = pair["continuation"]
        spans = word_spans(continuation)
        words = [continuation[start:end] for start, end in spans]
        flags = behavior.flag_words(words, references.threshold, scorer) if spans else []
        for (start, end), flagged in zip(spans, flags, strict=True):
            if flagged:
                pairs.append(
                    {"prompt": pair["prompt"] + continuation[:start], "continuation": continuation[start:end]}
                )
                kept.append(candidate)
    return replace(references, pairs=pairs, kept=kept, focus="words", unfocused=list(references.pairs))


def own_references(
    model: nn.Module,
    tokenizer,
    behavior: str,
    *,
    n_candidates: int,
    focus: Focus,
    threshold: float | None = None,
    max_new_tokens: int = 32,
    batch_size: int = 8,
    scorer: ScorerLike = None,
    seed: int = 0,
    sampling: Sampling | None = None,
) -> BehaviorSet:
    """The model's own undesired references among the first ``n_candidates`` built-in candidates
    of ``behavior`` (reference split of ``seed``): :func:`behavior_references`, then
    :func:`focus_on_words` for ``focus="words"``; ``sampling``: among sampled continuations.

    Raises:
        ValueError: No candidate shows the behaviour, or (``focus="words"``) no reference has an
            undesired word by itself; the message says what to change.
    """
    found = get_behavior(behavior)
    candidates = found.candidates("reference", seed=seed)[:n_candidates]
    scoring = {"scorer": scorer} if found.uses_scorer else {}
    references = behavior_references(
        model, tokenizer, candidates, behavior=behavior, threshold=threshold, max_new_tokens=max_new_tokens,
        batch_size=batch_size, sampling=sampling, **scoring,
    )  # fmt: skip
    if len(references) == 0:
        raise ValueError(
            f"None of {len(candidates)} candidates made the model show {behavior} above the "
            "threshold; lower the threshold or use more candidates."
        )
    if focus == "continuation":
        return references
    focused = focus_on_words(references, **scoring)
    if len(focused) == 0:
        raise ValueError(
            f"None of the {len(references)} references has a word that shows {behavior} by itself "
            "(focus='words'); use focus='continuation' to explain whole continuations."
        )
    return focused
