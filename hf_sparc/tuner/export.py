"""Export SPARC adapters for people without hf_sparc.

- :func:`export_merged`: a plain ``transformers`` checkpoint with the pruned weights zeroed.
- :func:`export_ia3`: neuron/head masks as a standard PEFT (IA)³ adapter (its vectors are exactly
  per-unit scales: 0 for a cut unit, the scale for a dampened one, 1 elsewhere).

:func:`save_adapter` (the SPARC adapter itself, optionally with an (IA)³ copy) and
:func:`export_ia3` live in :mod:`hf_sparc.tuner.io` and are re-exported here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch

from hf_sparc._files import write_group
from hf_sparc.tuner.io import export_ia3, save_adapter
from hf_sparc.tuner.layer import sparc_layers

if TYPE_CHECKING:
    from peft import PeftModel

__all__ = ["export_ia3", "export_merged", "save_adapter"]

# What a transformers checkpoint consists of (sharded or not), so stale shards do not survive a replace.
_CHECKPOINT_FILES = (
    "config.json",
    "generation_config.json",
    "model*.safetensors",
    "model.safetensors.index.json",
    "pytorch_model*.bin",
    "pytorch_model.bin.index.json",
)


@contextmanager
def _merged(model: torch.nn.Module) -> Iterator[None]:
    """Merge the active adapters for the duration of the block, then restore the previous state exactly."""
    layers = [layer for _, layer in sparc_layers(model)]
    before = [list(layer.merged_adapters) for layer in layers]
    try:
        for layer in layers:
            if any(
                a in layer.pruning_indices and a not in layer.merged_adapters for a in layer.active_adapters
            ):
                layer.merge()
        yield
    finally:
        for layer, merged in zip(layers, before, strict=True):
            if layer.merged_adapters != merged:
                layer.unmerge()
                if merged:
                    layer.merge(adapter_names=merged)


def export_merged(
    peft_model: PeftModel, save_directory: str | os.PathLike, *, overwrite: bool = False, **save_kwargs: Any
) -> None:
    """Save a plain ``transformers`` checkpoint of the pruned model (active adapters merged).

    Anyone can load it with ``AutoModelForCausalLM.from_pretrained(save_directory)``, no hf_sparc
    or PEFT needed. ``peft_model`` is left exactly as it was (merged only while saving). The
    checkpoint is staged and committed with ``config.json`` last, so an interrupted export never
    leaves a loadable mix of old and new files.

    Args:
        peft_model: A ``PeftModel`` with SPARC adapters.
        save_directory: Where to write the checkpoint.
        overwrite: Replace a checkpoint already in ``save_directory`` (else ``FileExistsError``).
        save_kwargs: Passed to ``PreTrainedModel.save_pretrained`` (e.g. ``max_shard_size``).
    """
    base = peft_model.get_base_model()
    wrapped = {name: f"{name}." for name, _ in sparc_layers(base)}
    with _merged(base):
        state = {}
        for key, tensor in base.state_dict().items():
            owner = next((name for name, prefix in wrapped.items() if key.startswith(prefix)), None)
            if owner is None:
                state[key] = tensor
            elif key.startswith(f"{owner}.base_layer."):
                state[f"{owner}.{key[len(owner) + len('.base_layer.') :]}"] = tensor
        write_group(
            save_directory,
            lambda staging: base.save_pretrained(str(staging), state_dict=state, **save_kwargs),
            marker="config.json",
            owned=_CHECKPOINT_FILES,
            overwrite=overwrite,
        )
