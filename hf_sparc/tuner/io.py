"""Write adapters to disk, never over another adapter unasked and never half-way.

- :func:`save_adapter`: one SPARC adapter as ``adapter_config.json`` + ``adapter_model.safetensors``
  (+ model card), at the top of the target folder whatever its name.
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
from hf_sparc.tuner.card import model_card
from hf_sparc.tuner.config import ADAPTER_WEIGHTS

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
        repo_id, metrics, reference_data: For the model card (see :func:`hf_sparc.tuner.card.model_card`).
    """
    from peft import get_peft_model_state_dict

    name = adapter_name or _single_active(peft_model)
    state = get_peft_model_state_dict(peft_model, adapter_name=name)
    config = copy.deepcopy(peft_model.peft_config[name])
    config.inference_mode = True
    if config.base_model_name_or_path is None:
        config.base_model_name_or_path = peft_model.get_base_model().name_or_path or None
    card = model_card(
        peft_model, adapter_name=name, repo_id=repo_id, metrics=metrics, reference_data=reference_data
    )
    write_adapter(save_directory, state, config, overwrite=overwrite, card=card)


def _single_active(peft_model: PeftModel) -> str:
    active = peft_model.active_adapters
    if len(active) != 1:
        raise ValueError(f"Several adapters are active ({active}); say which one with adapter_name=.")
    return active[0]


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
        keep_existing=_KEEP_CARD,
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
