"""Write adapters to disk, never over another adapter unasked and never half-way.

- :func:`save_adapter`: one SPARC adapter as ``adapter_config.json`` + ``adapter_model.safetensors``
  (+ model card, + optionally an (IA)³ copy in ``ia3/``), at the top of the target folder.
- :func:`export_ia3`: neuron/head masks as a standard PEFT (IA)³ adapter, loadable without hf_sparc.
- :func:`write_adapter`: the one all-or-nothing adapter write, shared with the (IA)³ export.
- :func:`guard_save_pretrained`: makes ``PeftModel.save_pretrained`` refuse to overwrite too.
"""

from __future__ import annotations

import copy
import os
import types
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from huggingface_hub import ModelCard
from safetensors.torch import save_file

from hf_sparc._files import write_group
from hf_sparc.architectures import geometry
from hf_sparc.tuner.card import model_card
from hf_sparc.tuner.config import ADAPTER_WEIGHTS
from hf_sparc.tuner.layer import sparc_layers

if TYPE_CHECKING:
    from peft import PeftConfig, PeftModel

ADAPTER_FILES = ("adapter_config.json", ADAPTER_WEIGHTS, "adapter_model.bin")
# Adapters are committed config last: loaders need the config first, so a folder without one is
# "no adapter", never "old config with new weights".
_ADAPTER_GROUP: dict[str, Any] = {"marker": "adapter_config.json", "owned": ADAPTER_FILES}
# never replace someone else's model card unasked
_KEEP_CARD = ("README.md",)


def refuse_existing_adapter(directory: str | os.PathLike, overwrite: bool) -> None:
    """Raise ``FileExistsError`` if ``directory`` already holds adapter files, unless ``overwrite``."""
    present = [f for f in ADAPTER_FILES if os.path.exists(os.path.join(directory, f))]
    if present and not overwrite:
        raise FileExistsError(
            f"{directory} already holds an adapter ({', '.join(present)}); refusing to overwrite it. "
            "Pass overwrite=True to replace it, or choose another directory."
        )


def write_adapter(
    directory: str | os.PathLike,
    tensors: dict[str, torch.Tensor],
    config: PeftConfig,
    *,
    overwrite: bool,
    card: ModelCard | None = None,
) -> None:
    """Write an adapter (weights, config, optional ``README.md``) into ``directory``, all or nothing.

    An adapter already there raises ``FileExistsError`` before anything is written, unless
    ``overwrite``; an existing ``README.md`` is kept unless ``overwrite``.
    """
    refuse_existing_adapter(directory, overwrite)

    def write(staging: Path) -> None:
        save_file(
            {k: v.contiguous() for k, v in tensors.items()},
            str(staging / ADAPTER_WEIGHTS),
            metadata={"format": "pt"},
        )
        config.save_pretrained(str(staging))
        if card is not None:
            card.save(staging / "README.md")

    write_group(directory, write, keep_existing=_KEEP_CARD, overwrite=overwrite, **_ADAPTER_GROUP)


def save_adapter(
    peft_model: PeftModel,
    save_directory: str | os.PathLike,
    *,
    adapter_name: str | None = None,
    overwrite: bool = False,
    repo_id: str | None = None,
    metrics: dict[str, float] | None = None,
    reference_data: str | None = None,
    ia3_copy: bool = False,
    **card: Any,
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
        repo_id, metrics, reference_data, card: For the model card (see
            :func:`hf_sparc.tuner.card.model_card`: ``metrics_before``, ``license``, ``datasets``).
        ia3_copy: Neuron/head adapters: also write a plain-PEFT (IA)³ copy in ``save_directory/ia3``
            (:func:`export_ia3`), which any PEFT install loads without hf_sparc
            (``PeftModel.from_pretrained(base, save_directory, subfolder="ia3")``); the card says so.
    """
    from peft import get_peft_model_state_dict

    name = adapter_name or _single_active(peft_model)
    state = get_peft_model_state_dict(peft_model, adapter_name=name)
    config = copy.deepcopy(peft_model.peft_config[name])
    config.inference_mode = True
    if config.base_model_name_or_path is None:
        config.base_model_name_or_path = peft_model.get_base_model().name_or_path or None
    card = model_card(
        peft_model, adapter_name=name, repo_id=repo_id, metrics=metrics, reference_data=reference_data,
        ia3_copy=ia3_copy, **card,
    )  # fmt: skip
    if ia3_copy:
        if config.level == "weight":
            raise ValueError("ia3_copy: weight-level masks cannot be expressed as (IA)³; use export_merged.")
        refuse_existing_adapter(os.path.join(save_directory, "ia3"), overwrite)
    write_adapter(save_directory, state, config, overwrite=overwrite, card=card)
    if ia3_copy:
        export_ia3(peft_model, os.path.join(save_directory, "ia3"), adapter_names=[name], overwrite=overwrite)


def _single_active(peft_model: PeftModel) -> str:
    active = peft_model.active_adapters
    if len(active) != 1:
        raise ValueError(f"Several adapters are active ({active}); say which one with adapter_name=.")
    return active[0]


def _guarded_save_pretrained(
    self: PeftModel, save_directory: str, *args: Any, overwrite: bool = True, **kwargs: Any
) -> None:
    """``PeftModel.save_pretrained`` for models with SPARC adapters: the same files, committed all
    at once, with the SPARC model card instead of PEFT's generic one.

    Like PEFT it replaces an adapter saved there before (``trainer.save_model()`` twice works);
    ``overwrite=False`` refuses instead. A ``README.md`` that is not an hf_sparc card is kept.
    """
    from peft import PeftModel

    names = kwargs.get("selected_adapters") or list(self.peft_config)
    for name in names:
        # PEFT's layout: the "default" adapter at the top, any other in a sub-folder of its name
        target = save_directory if name == "default" else os.path.join(save_directory, name)
        refuse_existing_adapter(target, overwrite)
    sparc = [name for name in names if getattr(self.peft_config[name], "peft_type", None) == "SPARC"]
    existing_card = Path(save_directory, "README.md")
    keep_card = existing_card.is_file() and not _is_sparc_card(existing_card)

    def write(staging: Path) -> None:
        # PEFT writes weights, then config, in place: staged here so an interrupted save leaves no mix
        PeftModel.save_pretrained(self, str(staging), *args, **kwargs)
        if keep_card:
            (staging / "README.md").unlink(missing_ok=True)
        elif sparc:
            active = [name for name in sparc if name in self.active_adapters]
            model_card(self, adapter_name=(active or sparc)[0]).save(staging / "README.md")

    write_group(save_directory, write, overwrite=True, **_ADAPTER_GROUP)


def _is_sparc_card(path: Path) -> bool:
    """Whether ``path`` is a model card hf_sparc wrote (its front matter carries the tag)."""
    text = path.read_text(encoding="utf-8", errors="replace")
    front = text.split("---", 2)[1] if text.startswith("---") and text.count("---") >= 2 else ""
    return "hf_sparc" in front


def guard_save_pretrained(peft_model: PeftModel) -> None:
    """Make ``peft_model.save_pretrained`` write all at once, with the SPARC model card.

    PEFT writes the weights before the config and offers no hook in between, so the call writes
    into a staging folder that is committed all at once (see :func:`hf_sparc._files.write_group`);
    :func:`hf_sparc.apply_masks` installs it on the models it returns.
    """
    # A bound method in the instance dict shadows the class method for this model only, and
    # copy.deepcopy rebinds it to the copy.
    object.__setattr__(peft_model, "save_pretrained", types.MethodType(_guarded_save_pretrained, peft_model))


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
