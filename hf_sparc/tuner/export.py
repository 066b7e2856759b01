"""Export SPARC adapters for people without hf_sparc.

- :func:`export_merged`: a plain ``transformers`` checkpoint with the pruned weights zeroed.
- :func:`export_ia3`: neuron/head masks as a standard PEFT (IA)³ adapter (its vectors are exactly
  per-unit scales: 0 for a cut unit, the scale for a dampened one, 1 elsewhere).

:func:`save_adapter` (the SPARC adapter itself) lives in :mod:`hf_sparc.tuner.io` and is
re-exported here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch

from hf_sparc._files import write_group
from hf_sparc.architectures import geometry
from hf_sparc.tuner.io import save_adapter, write_adapter
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


def export_ia3(
    peft_model: PeftModel,
    save_directory: str | os.PathLike,
    *,
    adapter_names: list[str] | None = None,
    overwrite: bool = False,
) -> None:
    """Export neuron/head masks as a standard PEFT (IA)³ adapter (loads with plain ``peft``).

    (IA)³ multiplies a module's output (or, for "feedforward" modules, its input) by a learned
    vector; a vector of ones with zeros at the pruned units (and their scales at dampened units)
    reproduces the mask:
    neuron masks scale the module output, head masks scale the input of the attention output
    projection. Weight-level masks cannot be expressed this way; use :func:`export_merged`.

    Args:
        peft_model: A ``PeftModel`` with SPARC adapters.
        save_directory: Where to write ``adapter_config.json`` + ``adapter_model.safetensors``.
        adapter_names: Adapters to export (their union); default: the active ones.
        overwrite: Replace an adapter already in ``save_directory`` (else ``FileExistsError``).
    """
    from peft import IA3Config

    names = adapter_names or list(peft_model.active_adapters)
    targets, feedforward, tensors, transposed = [], [], {}, False
    for module_name, layer in sparc_layers(peft_model.get_base_model()):
        levels = {layer.pruning_level[a] for a in names if a in layer.pruning_indices}
        if not levels:
            continue
        if "weight" in levels:
            raise ValueError(
                f"{module_name} has weight-level masks, which (IA)³ cannot express; use export_merged."
            )
        if levels == {"neuron", "head"}:
            raise ValueError(
                f"{module_name} has both neuron and head masks; (IA)³ scales either output or input."
            )
        on_input = levels == {"head"}
        scale = torch.ones(layer.in_features if on_input else layer.out_features)
        for adapter in names:
            if adapter in layer.pruning_indices:
                features, scales = layer.features(adapter).cpu(), layer.feature_scales(adapter)
                scale[features] *= 0 if scales is None else scales.cpu()
        targets.append(module_name)
        if on_input:
            feedforward.append(module_name)
        transposed = transposed or geometry.is_transposed(layer)
        tensors[f"base_model.model.{module_name}.ia3_l"] = scale[None, :] if on_input else scale[:, None]
    if not targets:
        raise ValueError(f"None of the adapters {names} has masks to export.")
    config = IA3Config(
        task_type="CAUSAL_LM",
        target_modules=targets,
        feedforward_modules=feedforward,
        fan_in_fan_out=transposed,
        inference_mode=True,
        base_model_name_or_path=peft_model.get_base_model().name_or_path or None,
    )
    write_adapter(save_directory, tensors, config, overwrite=overwrite)
