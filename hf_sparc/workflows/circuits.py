"""Circuit discovery: keep the components most relevant for a task, prune the rest progressively.

A *task* is a list of dicts ``{"prompt", "correct", "wrong"}``: the model should rank the first
token of ``correct`` above the first token of ``wrong`` right after ``prompt``. The built-in task
is indirect object identification (IOI, Wang et al. 2022, as generated in ACDC):
``"When Mary and John went to the store, John gave a drink to"`` → ``" Mary"`` (the indirect
object, IO) rather than ``" John"`` (the subject, S). :func:`ioi_dataset` generates it from
name/place/object templates, seeded, with a reference/evaluation split.

Pipeline (:func:`discover_circuit`):

1. :func:`task_relevance`: relevance of every unit for the logit difference ``correct − wrong``
   at the last prompt position. For gradient-based methods (``lrp``, ``cp-lrp``, ``gradient``)
   the backward pass is linear in the explained output, so ``R(logit_c − logit_w) =
   R(logit_c) − R(logit_w)`` exactly: two :func:`hf_sparc.attribute` runs with the ``next_token``
   objective on one-token continuations, subtracted. Forward-only methods (``activation``,
   ``wanda``) score the prompts; ``magnitude``/``random`` need no data. Units are ranked by
   ``|R|``: a unit that systematically hurts the task matters to the circuit as much as one
   that helps it.
2. Prune the least relevant units globally, in growing amounts (nested sets), and measure
   :func:`task_scores` (mean logit difference, accuracy) on the evaluation items: the
   performance–sparsity curve. Between the last passing and the first failing amount the count
   is bisected ``refine`` times.
3. The circuit is the smallest kept set whose accuracy is at least ``threshold`` × the unpruned
   accuracy; its :class:`~hf_sparc.Masks` prune everything outside it and ship as a SPARC adapter.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers.utils import logging as hf_logging

from hf_sparc.architectures import unwrap_model
from hf_sparc.attribution import attribute
from hf_sparc.data.builtin import Split, split_items
from hf_sparc.masks import Masks
from hf_sparc.metrics._common import eval_mode, model_device, pad_batch, progress_bar
from hf_sparc.relevance import Relevance
from hf_sparc.selection import select
from hf_sparc.tuner.model import apply_masks

__all__ = [
    "DEFAULT_FRACTIONS",
    "IOI_NAMES",
    "CircuitResult",
    "CurvePoint",
    "discover_circuit",
    "ioi_dataset",
    "logit_differences",
    "plot_curves",
    "single_token_names",
    "task_relevance",
    "task_scores",
]

# Candidate names; only those that are one token (with a leading space) for the tokenizer are used.
IOI_NAMES = (
    "Mary", "John", "Tom", "James", "Dan", "Sarah", "Paul", "Kate", "Mark", "Anna", "David", "Laura",
    "Mike", "Emma", "Chris", "Lisa", "Steve", "Amy", "Peter", "Rose", "Jack", "Alice", "Frank", "Grace",
    "Bob", "Helen", "Sam", "Jane", "Ben", "Lucy", "Adam", "Eric", "Ryan", "Emily", "Kevin", "Tim",
    "Joe", "Max", "Alex", "Eva",
)  # fmt: skip
_PLACES = ("store", "garden", "restaurant", "school", "hospital", "office", "station", "park")
_OBJECTS = ("ring", "book", "bone", "ball", "computer", "necklace", "drink", "snack")
# {A} and {B} are the two first mentions (IO and S in either order, ABBA/BABA); {S} is the subject again.
_TEMPLATES = (
    "Then, {A} and {B} went to the {place}. {S} gave a {object} to",
    "When {A} and {B} got a {object} at the {place}, {S} decided to give it to",
    "After {A} and {B} went to the {place}, {S} gave a {object} to",
    "While {A} and {B} were working at the {place}, {S} gave a {object} to",
    "Then, {A} and {B} had a lot of fun at the {place}. {S} gave a {object} to",
    "When {A} and {B} arrived at the {place}, {S} handed a {object} to",
    "Friends {A} and {B} went to the {place}. {S} gave a {object} to",
    "The {place} {A} and {B} went to had a {object}. {S} gave it to",
)

DEFAULT_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99)
"""Shares of the scored units pruned along the curve (before bisection refines it)."""

_GRADIENT_METHODS = ("lrp", "cp-lrp", "gradient")


# --------------------------------------------------------------------------------------------
# Tasks
# --------------------------------------------------------------------------------------------


def single_token_names(tokenizer, candidates: Sequence[str] = IOI_NAMES) -> list[str]:
    """The ``candidates`` that are a single known token after a space (how they follow ``" to"``)."""
    unknown = getattr(tokenizer, "unk_token_id", None)
    encoded = {n: tokenizer(" " + n, add_special_tokens=False)["input_ids"] for n in candidates}
    return [n for n, ids in encoded.items() if len(ids) == 1 and ids[0] != unknown]


def ioi_dataset(
    tokenizer=None,
    *,
    n: int = 200,
    split: Split = "reference",
    seed: int = 0,
    names: Sequence[str] | None = None,
) -> list[dict[str, str]]:
    """IOI items ``{"prompt", "correct", "wrong", "io", "s", "template"}`` (ACDC-style templates).

    ``n`` items are generated with ``random.Random(seed)`` (two distinct names, a template, a
    place, an object, ABBA or BABA order), then split with :func:`hf_sparc.data.split_items`:
    ``"reference"`` (``n - n // 2`` items, for attribution), ``"evaluation"`` (``n // 2``, for
    the curve) or ``"all"``. In every prompt the IO name occurs once and S twice; ``correct`` is
    ``" " + IO`` and ``wrong`` is ``" " + S``.

    Args:
        tokenizer: Used to keep only single-token names (not needed when ``names`` is given).
        n: Items generated before splitting.
        split, seed: Which part, and the seed of both generation and split.
        names: Names to use instead of the single-token subset of :data:`IOI_NAMES`.

    Raises:
        ValueError: fewer than two usable names, or ``n < 2``.
    """
    if names is None:
        if tokenizer is None:
            raise ValueError("Pass tokenizer= (to pick single-token names) or names=.")
        names = single_token_names(tokenizer)
    names = list(dict.fromkeys(names))
    if len(names) < 2:
        raise ValueError(f"IOI needs at least two single-token names for this tokenizer, got {names}.")
    if n < 2:
        raise ValueError(f"n must be at least 2, got {n}.")
    rng = random.Random(seed)
    items = []
    for _ in range(n):
        io, s = rng.sample(names, 2)
        template = rng.randrange(len(_TEMPLATES))
        first, second = (io, s) if rng.random() < 0.5 else (s, io)
        prompt = _TEMPLATES[template].format(
            A=first, B=second, S=s, place=rng.choice(_PLACES), object=rng.choice(_OBJECTS)
        )
        items.append({"prompt": prompt, "correct": " " + io, "wrong": " " + s, "io": io, "s": s,
                      "template": template})  # fmt: skip
    return split_items(items, split, seed)


def _first_tokens(
    tokenizer, items: Sequence[Mapping[str, Any]]
) -> tuple[list[list[int]], list[int], list[int]]:
    """Prompt ids (with special tokens, as :func:`hf_sparc.attribute` encodes prompts) and the
    first token of each correct and wrong continuation."""
    if isinstance(items, str | bytes) or not len(items):
        raise ValueError("A task needs a non-empty list of {'prompt', 'correct', 'wrong'} items.")
    prompts, correct, wrong = [], [], []
    for index, item in enumerate(items):
        if not isinstance(item, Mapping) or not all(
            isinstance(item.get(k), str) for k in ("prompt", "correct", "wrong")
        ):
            raise ValueError(f"Task item {index} must be a dict with string 'prompt', 'correct' and 'wrong'.")
        ids = [tokenizer(item[k], add_special_tokens=False)["input_ids"] for k in ("correct", "wrong")]
        if not ids[0] or not ids[1]:
            raise ValueError(f"Task item {index}: 'correct' and 'wrong' must not be empty.")
        if ids[0][0] == ids[1][0]:
            raise ValueError(f"Task item {index}: 'correct' and 'wrong' start with the same token.")
        prompts.append(list(tokenizer(item["prompt"])["input_ids"]))
        correct.append(ids[0][0])
        wrong.append(ids[1][0])
    return prompts, correct, wrong


def logit_differences(
    model: nn.Module,
    tokenizer,
    items: Sequence[Mapping[str, Any]],
    *,
    batch_size: int = 16,
    progress: bool = True,
) -> torch.Tensor:
    """Per item: logit of the first ``correct`` token minus that of the first ``wrong`` token,
    at the last prompt position (fp32, ``[len(items)]``)."""
    prompts, correct, wrong = _first_tokens(tokenizer, items)
    device = model_device(model)
    # the backbone (adapters included) for all positions, the output layer only at the last one:
    # full-vocabulary logits at every position would cost as much as a few decoder layers
    causal_lm = unwrap_model(model)
    head = causal_lm.get_output_embeddings()
    out = []
    with (
        eval_mode(model),
        torch.inference_mode(),
        progress_bar(len(prompts), "hf_sparc task", progress) as bar,
    ):
        for start in range(0, len(prompts), batch_size):
            # right padding: real positions are unchanged; the pad id is never attended to
            input_ids, attention_mask = pad_batch(prompts[start : start + batch_size], 0, "right", device)
            hidden = causal_lm.base_model(
                input_ids=input_ids, attention_mask=attention_mask, use_cache=False
            ).last_hidden_state
            last = head(
                hidden[torch.arange(len(input_ids), device=device), attention_mask.sum(1) - 1]
            ).float()
            pick = torch.tensor(
                [correct[start : start + batch_size], wrong[start : start + batch_size]], device=device
            )
            out.append((last.gather(1, pick[0][:, None]) - last.gather(1, pick[1][:, None])).squeeze(1).cpu())
            bar.update(len(input_ids))
    return torch.cat(out)


def task_scores(
    model: nn.Module,
    tokenizer,
    items: Sequence[Mapping[str, Any]],
    *,
    batch_size: int = 16,
    progress: bool = True,
) -> dict[str, float]:
    """``{"logit_diff": mean logit difference, "accuracy": share of items with a positive one, "n"}``."""
    diffs = logit_differences(model, tokenizer, items, batch_size=batch_size, progress=progress)
    return {"logit_diff": float(diffs.mean()), "accuracy": float((diffs > 0).float().mean()), "n": len(diffs)}


def task_relevance(
    model: nn.Module,
    tokenizer,
    items: Sequence[Mapping[str, Any]],
    *,
    method: str = "lrp",
    level: str = "neuron",
    target_modules: str | Sequence[str] | None = None,
    batch_size: int = 8,
    max_length: int = 128,
    seed: int = 0,
    progress: bool = True,
) -> Relevance:
    """``|R|`` of every unit for the task's logit difference (see the module docstring).

    Gradient-based methods explain ``logit(correct) − logit(wrong)`` at the last prompt position
    (two signed attributions subtracted: exact by linearity of the backward pass); ``activation``
    and ``wanda`` score the prompts; ``magnitude`` and ``random`` use no data.
    """
    common = dict(
        tokenizer=tokenizer,
        method=method,
        level=level,
        target_modules=target_modules,
        batch_size=batch_size,
        max_length=max_length,
        seed=seed,
        progress=progress,
    )
    if method in _GRADIENT_METHODS:
        _, correct, wrong = _first_tokens(tokenizer, items)
        explained = []
        for ids in (correct, wrong):
            texts = [tokenizer.decode([i]) for i in ids]
            if any(
                tokenizer(t, add_special_tokens=False)["input_ids"] != [i]
                for t, i in zip(texts, ids, strict=True)
            ):
                raise ValueError(
                    "The first token of a continuation does not re-encode to itself; use other answers."
                )
            pairs = [
                {"prompt": item["prompt"], "continuation": t} for item, t in zip(items, texts, strict=True)
            ]
            explained.append(attribute(model, pairs, objective="next_token", absolute=False, **common))
        return abs(explained[0] - explained[1])
    return abs(attribute(model, [item["prompt"] for item in items], **common))


# --------------------------------------------------------------------------------------------
# Curve and circuit
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CurvePoint:
    """Task performance with the ``pruned`` least relevant units removed."""

    pruned: int
    accuracy: float
    logit_diff: float


@dataclass(frozen=True)
class CircuitResult:
    """A performance–sparsity curve and the circuit read from it.

    Attributes:
        method, level: How units were scored, and which units.
        total: Units in scope.
        threshold: Required share of the unpruned accuracy.
        points: The curve, by growing ``pruned``; ``points[0]`` is the unpruned model.
        circuit: The point with the most units pruned whose accuracy passes the threshold.
        masks: Prune everything outside the circuit (``None`` when the circuit is the whole model).
    """

    method: str
    level: str
    total: int
    threshold: float
    points: tuple[CurvePoint, ...]
    circuit: CurvePoint
    masks: Masks | None = field(default=None, repr=False, compare=False)

    @property
    def baseline(self) -> CurvePoint:
        return self.points[0]

    @property
    def kept(self) -> int:
        """Units in the circuit."""
        return self.total - self.circuit.pruned

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "level": self.level,
            "total": self.total,
            "threshold": self.threshold,
            "kept": self.kept,
            "kept_fraction": self.kept / self.total,
            "circuit": asdict(self.circuit),
            "baseline": asdict(self.baseline),
            "points": [asdict(p) for p in self.points],
        }


def _passes(point: CurvePoint, baseline: CurvePoint, threshold: float) -> bool:
    return point.accuracy >= threshold * baseline.accuracy - 1e-9


def discover_circuit(
    model: nn.Module,
    tokenizer,
    reference: Sequence[Mapping[str, Any]],
    evaluation: Sequence[Mapping[str, Any]],
    *,
    method: str = "lrp",
    level: str = "neuron",
    threshold: float = 0.9,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    refine: int = 4,
    relevance: Relevance | None = None,
    target_modules: str | Sequence[str] | None = None,
    batch_size: int = 8,
    max_length: int = 128,
    seed: int = 0,
    progress: bool = True,
) -> CircuitResult:
    """Rank units by task relevance, prune the least relevant progressively, read off the circuit.

    Args:
        model: A supported causal LM; it is left unmodified (each step is a temporary adapter).
        tokenizer: Its tokenizer.
        reference: Task items scored by :func:`task_relevance`.
        evaluation: Task items the curve is measured on.
        method, level, target_modules: As in :func:`hf_sparc.attribute`.
        threshold: The circuit keeps at least ``threshold`` × the unpruned accuracy.
        fractions: Shares of units pruned along the curve, each in ``(0, 1)``.
        refine: Bisection steps between the last passing and the next failing amount.
        relevance: Precomputed task relevance (skips step 1).
        batch_size, max_length, seed, progress: As in :func:`hf_sparc.attribute`.
    """
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}.")
    if any(not 0 < f < 1 for f in fractions) or not fractions:
        raise ValueError(f"fractions must be in (0, 1), got {list(fractions)}.")
    if refine < 0:
        raise ValueError(f"refine must be >= 0, got {refine}.")
    rel = relevance
    if rel is None:
        rel = task_relevance(
            model,
            tokenizer,
            reference,
            method=method,
            level=level,
            target_modules=target_modules,
            batch_size=batch_size,
            max_length=max_length,
            seed=seed,
            progress=progress,
        )
    total = rel.numel()
    # only the masks of the best passing point are kept: weight-level masks can be large
    best: dict[str, Any] = {"pruned": 0, "masks": None}

    def measure(pruned: int) -> CurvePoint:
        if not pruned:
            scores = task_scores(model, tokenizer, evaluation, batch_size=batch_size, progress=False)
            return CurvePoint(0, scores["accuracy"], scores["logit_diff"])
        # select() breaks ties deterministically, so larger counts prune supersets (nested curve)
        chosen = select(rel, count=pruned, keep="highest", scope="global")
        candidate = apply_masks(model, chosen, adapter_name="circuit")
        try:
            scores = task_scores(candidate, tokenizer, evaluation, batch_size=batch_size, progress=False)
        finally:
            candidate.unload()
        point = CurvePoint(pruned, scores["accuracy"], scores["logit_diff"])
        if _passes(point, points[0], threshold) and pruned > best["pruned"]:
            best.update(pruned=pruned, masks=chosen)
        return point

    counts = sorted({c for f in fractions if 0 < (c := math.floor(f * total)) < total})
    points: dict[int, CurvePoint] = {}
    points[0] = baseline = measure(0)
    steps = tqdm(
        total=len(counts) + refine,
        desc=f"hf_sparc circuit ({method}, {level})",
        unit="step",
        disable=not (progress and hf_logging.is_progress_bar_enabled()),
    )
    with steps as bar:
        for count in counts:
            points[count] = measure(count)
            bar.update(1)
        passing = max(c for c, p in points.items() if _passes(p, baseline, threshold))
        failing = min(
            (c for c, p in points.items() if c > passing and not _passes(p, baseline, threshold)),
            default=None,
        )
        for _ in range(refine):
            if failing is None or failing - passing < 2:
                break
            middle = (passing + failing) // 2
            points[middle] = measure(middle)
            passing, failing = (
                (middle, failing) if _passes(points[middle], baseline, threshold) else (passing, middle)
            )
            bar.update(1)
    circuit = points[best["pruned"]]
    return CircuitResult(
        method=method,
        level=rel.level,
        total=total,
        threshold=threshold,
        points=tuple(points[c] for c in sorted(points)),
        circuit=circuit,
        masks=best["masks"],
    )


def plot_curves(results: Sequence[CircuitResult], path: str | os.PathLike) -> None:
    """Accuracy and logit difference against the share of pruned units, one line per result,
    the circuit marked with a star (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, key in zip(axes, ("accuracy", "logit_diff"), strict=True):
        for result in results:
            xs = [p.pruned / result.total for p in result.points]
            (line,) = ax.plot(xs, [getattr(p, key) for p in result.points], marker=".", label=result.method)
            ax.plot(
                result.circuit.pruned / result.total,
                getattr(result.circuit, key),
                "*",
                ms=12,
                color=line.get_color(),
            )
        ax.set_xlabel(f"share of {results[0].level}s pruned")
        ax.set_title(key.replace("_", " "))
        if key == "accuracy":
            ax.axhline(results[0].threshold * results[0].baseline.accuracy, color="#888888", ls="--", lw=1)
    axes[0].legend(fontsize="small")
    fig.suptitle("Task performance while pruning the least relevant units (★ = circuit)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
