"""Two-choice tasks: items ``{"prompt", "correct", "wrong"}``, and the built-in IOI generator.

The model should rank the first token of ``correct`` above the first token of ``wrong`` right
after ``prompt``. The built-in task is indirect object identification (IOI, Wang et al. 2022, as
generated in ACDC): ``"When Mary and John went to the store, John gave a drink to"`` → ``" Mary"``
(the indirect object, IO) rather than ``" John"`` (the subject, S).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

from hf_sparc.data.builtin import Split, split_items

__all__ = ["IOI_NAMES", "answer_tokens", "ioi_dataset", "single_token_names"]

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
    ``"reference"`` (``n - n // 2`` items, for attribution), ``"dev"`` (the first half, rounded
    up, of the other ``n // 2``: the curve while choices are made), ``"test"`` (the rest: only
    for reporting a fixed configuration) or ``"all"``. In every prompt the IO name occurs once
    and S twice; ``correct`` is ``" " + IO`` and ``wrong`` is ``" " + S``.

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


def answer_tokens(
    tokenizer, items: Sequence[Mapping[str, Any]]
) -> tuple[list[list[int]], list[int], list[int]]:
    """Prompt ids (with special tokens, as :func:`hf_sparc.attribute` encodes prompts) and the
    first token of each correct and wrong continuation.

    Raises:
        ValueError: an empty task, an item without string ``prompt``/``correct``/``wrong``, an
            empty answer, or two answers that start with the same token.
    """
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
