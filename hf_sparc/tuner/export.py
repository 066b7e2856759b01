"""Write SPARC adapters to disk, and export them for people without hf_sparc.

- :func:`save_adapter`: one adapter as ``adapter_config.json`` + ``adapter_model.safetensors``
  (+ model card), refusing to overwrite another adapter.
- :func:`export_merged`: a plain ``transformers`` checkpoint with the pruned weights zeroed.
- :func:`export_ia3`: neuron/head masks as a standard PEFT (IA)³ adapter with 0/1 scales.
"""

from __future__ import annotations

import copy
import os
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import save_file
from transformers.pytorch_utils import Conv1D

from hf_sparc._files import write_group
from hf_sparc.tuner.config import ADAPTER_WEIGHTS
from hf_sparc.tuner.layer import SparcLayer

if TYPE_CHECKING:
    from peft import PeftModel

ADAPTER_FILES = ("adapter_config.json", ADAPTER_WEIGHTS, "adapter_model.bin")
# Adapters are committed config last: loaders need the config first, so a folder without one is
# "no adapter", never "old config with new weights".
_ADAPTER_GROUP: dict[str, Any] = {"marker": "adapter_config.json", "owned": ADAPTER_FILES}
# What a transformers checkpoint consists of (sharded or not), so stale shards do not survive a replace.
_CHECKPOINT_FILES = (
    "config.json",
    "generation_config.json",
    "model*.safetensors",
    "model.safetensors.index.json",
    "pytorch_model*.bin",
    "pytorch_model.bin.index.json",
)


def refuse_existing_adapter(directory: str | os.PathLike, overwrite: bool) -> None:
    """Raise ``FileExistsError`` if ``directory`` already holds adapter files, unless ``overwrite``."""
    present = [f for f in ADAPTER_FILES if os.path.exists(os.path.join(directory, f))]
    if present and not overwrite:
        raise FileExistsError(
            f"{directory} already holds an adapter ({', '.join(present)}); refusing to overwrite it. "
            "Pass overwrite=True to replace it, or choose another directory."
        )


def save_adapter(
    peft_model: PeftModel,
    save_directory: str | os.PathLike,
    *,
    adapter_name: str | None = None,
    overwrite: bool = False,
    repo_id: str | None = None,
    metrics: dict[str, float] | None = None,
    reference_data: str | None = None,
) -> None:
    """Save one SPARC adapter at the top of ``save_directory``, with a model card.

    Unlike ``PeftModel.save_pretrained`` (which puts non-default adapter names in
    sub-folders), the adapter lands in ``save_directory`` itself whatever its name, ready for
    ``PeftModel.from_pretrained(base, save_directory)`` or ``AutoModelForCausalLM.from_pretrained``.

    Args:
        peft_model: A ``PeftModel`` holding SPARC adapters.
        save_directory: Target directory (created if needed).
        adapter_name: Which adapter; default: the active one.
        overwrite: Replace adapter files and README.md already in ``save_directory``; without it
            an existing adapter there raises ``FileExistsError`` and nothing is written, and an
            existing README.md is kept.
        repo_id, metrics, reference_data: For the model card (see :func:`hf_sparc.tuner.hub.model_card`).
    """
    from peft import get_peft_model_state_dict

    from hf_sparc.tuner.hub import model_card

    name = adapter_name or _single_active(peft_model)
    refuse_existing_adapter(save_directory, overwrite)
    state = get_peft_model_state_dict(peft_model, adapter_name=name)
    config = copy.deepcopy(peft_model.peft_config[name])
    config.inference_mode = True
    if config.base_model_name_or_path is None:
        config.base_model_name_or_path = peft_model.get_base_model().name_or_path or None
    card = model_card(
        peft_model, adapter_name=name, repo_id=repo_id, metrics=metrics, reference_data=reference_data
    )

    def write(staging: Path) -> None:
        save_file(
            {k: v.contiguous() for k, v in state.items()},
            str(staging / ADAPTER_WEIGHTS),
            metadata={"format": "pt"},
        )
        config.save_pretrained(str(staging))
        card.save(staging / "README.md")

    # never replace someone else's model card unasked
    write_group(save_directory, write, keep_existing=("README.md",), overwrite=overwrite, **_ADAPTER_GROUP)


def _guarded_save_pretrained(
    self: PeftModel, save_directory: str, *args: Any, overwrite: bool = False, **kwargs: Any
) -> None:
    """``PeftModel.save_pretrained`` that refuses to overwrite an adapter unless ``overwrite=True``."""
    from peft import PeftModel

    for name in kwargs.get("selected_adapters") or list(self.peft_config):
        # PEFT's layout: the "default" adapter at the top, any other in a sub-folder of its name
        target = save_directory if name == "default" else os.path.join(save_directory, name)
        refuse_existing_adapter(target, overwrite)
    # PEFT writes weights, then config, in place: staged here so an interrupted save leaves no mix
    write_group(
        save_directory,
        lambda staging: PeftModel.save_pretrained(self, str(staging), *args, **kwargs),
        keep_existing=("README.md",),
        overwrite=overwrite,
        **_ADAPTER_GROUP,
    )


def guard_save_pretrained(peft_model: PeftModel) -> None:
    """Make ``peft_model.save_pretrained`` refuse to overwrite another adapter (``overwrite=True`` to allow).

    PEFT writes the weights before the config and offers no hook in between, so the check has to
    sit in front of the whole call, and the call writes into a staging folder that is committed
    all at once (see :func:`hf_sparc._files.write_group`); :func:`hf_sparc.apply_masks` installs it
    on the models it returns.
    """
    # A bound method in the instance dict shadows the class method for this model only, and
    # copy.deepcopy rebinds it to the copy.
    object.__setattr__(peft_model, "save_pretrained", types.MethodType(_guarded_save_pretrained, peft_model))


def _single_active(peft_model: PeftModel) -> str:
    active = peft_model.active_adapters
    if len(active) != 1:
        raise ValueError(f"Several adapters are active ({active}); say which one with adapter_name=.")
    return active[0]


def _sparc_layers(model: torch.nn.Module) -> Iterator[tuple[str, SparcLayer]]:
    for name, module in model.named_modules():
        if isinstance(module, SparcLayer):
            yield name, module


@contextmanager
def _merged(model: torch.nn.Module) -> Iterator[None]:
    """Merge the active adapters for the duration of the block, then restore the previous state exactly."""
    layers = [layer for _, layer in _sparc_layers(model)]
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
    wrapped = {name: f"{name}." for name, _ in _sparc_layers(base)}
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
    vector; a vector of ones with zeros at the pruned units reproduces the mask exactly:
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
    targets, feedforward, tensors, conv1d = [], [], {}, False
    for module_name, layer in _sparc_layers(peft_model.get_base_model()):
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
                scale[layer.features(adapter).cpu()] = 0
        targets.append(module_name)
        if on_input:
            feedforward.append(module_name)
        conv1d = conv1d or isinstance(layer.get_base_layer(), Conv1D)
        tensors[f"base_model.model.{module_name}.ia3_l"] = scale[None, :] if on_input else scale[:, None]
    if not targets:
        raise ValueError(f"None of the adapters {names} has masks to export.")
    config = IA3Config(
        task_type="CAUSAL_LM",
        target_modules=targets,
        feedforward_modules=feedforward,
        fan_in_fan_out=conv1d,
        inference_mode=True,
        base_model_name_or_path=peft_model.get_base_model().name_or_path or None,
    )
    refuse_existing_adapter(save_directory, overwrite)

    def write(staging: Path) -> None:
        save_file(tensors, str(staging / ADAPTER_WEIGHTS), metadata={"format": "pt"})
        config.save_pretrained(str(staging))

    write_group(save_directory, write, overwrite=overwrite, **_ADAPTER_GROUP)
