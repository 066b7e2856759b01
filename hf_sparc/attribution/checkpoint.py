"""Resumable attribution: the accumulators of a run, saved every N batches and reloaded.

One safetensors file per process (``attribution-rank{r}-of-{n}.safetensors``), replaced
atomically, so a run killed at any moment leaves either the previous or the new state. The file
records a fingerprint of everything that decides the result (method, level, settings, targets,
the tokenized samples, the process layout); resuming with anything else is refused rather than
mixed. Sums are stored exactly (float64), so a resumed run is bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hf_sparc._files import load_tensors, save_tensors
from hf_sparc.attribution.distributed import Shard
from hf_sparc.data.batching import Sample

_METADATA_KEY = "hf_sparc.attribution_checkpoint"
_FORMAT_VERSION = 1


@dataclass
class AccumulatorState:
    """Everything a run has accumulated so far.

    Attributes:
        sums: Per-module float64 sums (the :class:`~hf_sparc.attribution.collector.Collector`'s).
        n_real: Real (non-padding) tokens seen.
        done: Batches of this process finished.
        outputs: Explained output of each text, by global batch index.
        tokens: Token level: each text's per-position relevance, by global batch index.
    """

    sums: dict[str, torch.Tensor] = field(default_factory=dict)
    n_real: int = 0
    done: int = 0
    outputs: dict[int, list[float]] = field(default_factory=dict)
    tokens: dict[int, list[torch.Tensor]] = field(default_factory=dict)


def run_fingerprint(samples: Sequence[Sample], description: dict[str, Any]) -> str:
    """A digest of the samples and of ``description`` (JSON-serialisable settings)."""
    digest = hashlib.sha256(json.dumps(description, sort_keys=True, default=str).encode())
    for sample in samples:
        digest.update(json.dumps([sample.explain_from, sample.input_ids]).encode())
    return digest.hexdigest()


class CheckpointStore:
    """Saves and restores one process's :class:`AccumulatorState` under ``directory``."""

    def __init__(self, directory: str | os.PathLike, fingerprint: str, shard: Shard, every: int) -> None:
        self.path = Path(directory) / f"attribution-rank{shard.rank}-of-{shard.world_size}.safetensors"
        self.fingerprint, self.every = fingerprint, every

    def load(self) -> AccumulatorState | None:
        """The saved state, or ``None`` when there is none yet."""
        if not self.path.is_file():
            return None
        tensors, meta = load_tensors(self.path, _METADATA_KEY, "attribution checkpoint")
        if meta.get("fingerprint") != self.fingerprint:
            raise ValueError(
                f"{self.path} belongs to a different attribution run (other model, texts, method, settings "
                "or number of processes); delete it or pass another checkpoint_dir."
            )
        state = AccumulatorState(n_real=meta["n_real"], done=meta["done"])
        state.outputs = {int(index): values for index, values in meta["outputs"].items()}
        for key, tensor in tensors.items():
            kind, _, rest = key.partition(":")
            if kind == "sum":
                state.sums[rest] = tensor
            else:
                index, _, position = rest.partition(":")
                state.tokens.setdefault(int(index), []).append((int(position), tensor))
        state.tokens = {i: [t for _, t in sorted(pairs)] for i, pairs in state.tokens.items()}
        return state

    def save(self, state: AccumulatorState, *, force: bool = False) -> None:
        """Write ``state`` when ``done`` is a multiple of ``every`` (always with ``force``)."""
        if not force and state.done % self.every:
            return
        tensors = {f"sum:{name}": total for name, total in state.sums.items()}
        for index, texts in state.tokens.items():
            tensors.update({f"token:{index}:{position}": t for position, t in enumerate(texts)})
        meta = {
            "format": _FORMAT_VERSION,
            "fingerprint": self.fingerprint,
            "n_real": state.n_real,
            "done": state.done,
            "outputs": {str(index): values for index, values in state.outputs.items()},
        }
        save_tensors(self.path, tensors, _METADATA_KEY, meta, overwrite=True)
