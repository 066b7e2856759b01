"""Reference and held-out data from a SPEC string, as accepted by the CLI and the pruner.

A SPEC is one of:

* a local file: ``.txt`` (one text per line), ``.jsonl`` (one JSON object or string per line),
  ``.csv`` (rows as dicts; needs a header), ``.json`` / ``.parquet`` (read by ``datasets``'
  ``json`` / ``parquet`` builders: rows as dicts);
* a built-in set: ``toxic-prompts``, ``general``, ``repetition-prompts``, optionally with a split,
  e.g. ``general:dev`` (splits ``reference``, ``dev``, ``test``, ``all``; default: ``reference``;
  see :mod:`hf_sparc.data.builtin`);
* a ``datasets`` spec ``name[:config][:split][:column]`` (needs the Hub or a local cache).

A split may be sliced as in ``datasets``: ``general:dev[:200]``, ``imdb::test[100:300]:text``.
"""

from __future__ import annotations

import csv
import json
import re
import warnings
from pathlib import Path
from typing import Any

from hf_sparc.data.builtin import builtin_dataset, builtin_datasets, check_split


def _read_utf8(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        line = path.read_bytes()[: error.start].count(b"\n") + 1
        raise ValueError(f"{path} is not UTF-8 text (line {line}); re-encode it as UTF-8.") from error


# ":" separates SPEC parts, except inside a slice such as "test[:200]"
_PARTS = re.compile(r":(?![^\[]*\])")
_SLICE = re.compile(r"^(?P<split>[^\[]*)\[(?P<start>-?\d*):(?P<stop>-?\d*)\]$")


def _sliced(split: str) -> tuple[str, slice]:
    """``"dev[:200]"`` -> ``("dev", slice(None, 200))``; no slice -> the whole split."""
    match = _SLICE.match(split)
    if match is None:
        if "[" in split or "]" in split:
            raise ValueError(f"Bad split slice {split!r}; expected e.g. 'dev[:200]' or 'test[100:300]'.")
        return split, slice(None)
    bound = [int(match[k]) if match[k] else None for k in ("start", "stop")]
    return match["split"], slice(*bound)


def _read_file(path: Path) -> list[Any]:
    suffix = path.suffix.lower()
    if suffix in (".json", ".parquet"):
        import datasets

        try:
            rows = list(datasets.load_dataset(suffix[1:], data_files=str(path), split="train"))
        except Exception as error:  # datasets raises many types for malformed files
            raise ValueError(
                f"{path} could not be read as {suffix[1:]}: {str(error).splitlines()[0]}"
            ) from error
        if not rows:
            raise ValueError(f"{path} holds no rows.")
        return rows
    if suffix == ".csv":
        reader = csv.DictReader(_read_utf8(path).splitlines())
        # rows whose cells are all blank carry no text, like blank lines in .txt/.jsonl
        rows = [row for row in reader if any(str(v or "").strip() for v in row.values())]
        if not any(name.strip() for name in reader.fieldnames or []):
            raise ValueError(f"{path} has no header line naming its columns.")
        if not rows:
            raise ValueError(f"{path} has no data rows (a header line and at least one row are needed).")
        return rows
    if suffix not in (".txt", ".jsonl"):
        raise ValueError(
            f"Unsupported file type {suffix!r} for {path}; use .txt, .jsonl, .csv, .json or .parquet."
        )
    items, blank = [], 0
    for number, line in enumerate(_read_utf8(path).splitlines(), start=1):
        if not line.strip():
            blank += 1
            continue
        if suffix == ".txt":
            items.append(line)
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{number} is not valid JSON: {error.msg}.") from error
        if not isinstance(item, str | dict):
            raise ValueError(f"{path}:{number} must be a JSON object or string, got {type(item).__name__}.")
        items.append(item)
    if not items:
        raise ValueError(f"{path} holds no texts ({blank} empty or whitespace-only line(s)).")
    if blank:
        warnings.warn(f"{path}: skipped {blank} empty or whitespace-only line(s).", stacklevel=3)
    return items


def plain_texts(items: list[Any], text_column: str = "text") -> list[str]:
    """Items as plain strings (for perplexity): a dict's text column, or prompt + continuation."""
    texts = []
    for item in items:
        if isinstance(item, str):
            texts.append(item)
        elif isinstance(item, dict) and text_column in item:
            texts.append(item[text_column])
        elif isinstance(item, dict) and "prompt" in item:
            texts.append(item["prompt"] + item.get("continuation", ""))
        else:
            raise ValueError(
                f"Cannot read a text from {item!r}; expected a string or a dict with {text_column!r}."
            )
    return texts


def load_texts(spec: str, *, default_split: str = "reference", seed: int = 0) -> list[Any]:
    """Load the texts (or dicts) that ``spec`` names; raises a one-line error when it can't."""
    path = Path(spec)
    if path.exists():
        if path.is_dir():
            raise ValueError(f"{spec} is a directory; give a .txt, .jsonl, .csv, .json or .parquet file.")
        return _read_file(path)
    name, _, split = spec.partition(":")
    if name in builtin_datasets():
        split, part = _sliced(split or default_split)
        check_split(split, where=f" in {spec!r}")
        return list(builtin_dataset(name, split=split, seed=seed))[part]
    if path.suffix.lower() in _FILE_TYPES or ("/" in spec and path.parent.exists()):
        raise FileNotFoundError(f"No such file: {spec}")
    return _load_dataset(spec)


_FILE_TYPES = (".txt", ".jsonl", ".csv", ".json", ".parquet")


def _load_dataset(spec: str) -> list[Any]:
    parts = _PARTS.split(spec)
    if len(parts) > 4:
        raise ValueError(f"Bad datasets spec {spec!r}; expected name[:config][:split][:column].")
    name, config, split, column = (parts + [None] * 4)[:4]
    if split:
        _sliced(split)  # a malformed slice is the user's mistake, not "could not load"
    import datasets

    try:
        dataset = datasets.load_dataset(name, config or None, split=split or "train")
    except Exception as error:  # datasets raises many types for unreachable / unknown data
        raise ValueError(
            f"Could not load {spec!r}: not a local file, not a built-in "
            f"({', '.join(builtin_datasets())}), and datasets failed: {str(error).splitlines()[0]}"
        ) from error
    if column:
        if column not in dataset.column_names:
            raise ValueError(f"{spec!r}: no column {column!r} (columns: {dataset.column_names}).")
        return list(dataset[column])
    return list(dataset)
