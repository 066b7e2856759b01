"""`SparcPruner`: the transformers-native workflow (its `SparcConfig` lives in
:mod:`hf_sparc.workflows.config` and is re-exported here).

Fit on reference texts, prune into a PEFT adapter, and drop the pruner into a ``Trainer`` as a
callback that keeps pruned weights at exactly zero.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from hf_sparc._files import write_group
from hf_sparc.attribution import attribute
from hf_sparc.attribution.signals import get_method
from hf_sparc.data.batching import TextsLike
from hf_sparc.masks import Masks
from hf_sparc.relevance import Relevance
from hf_sparc.selection import Pool, candidate_pool, select, select_contrastive
from hf_sparc.tuner.enforce import ZeroingPlan
from hf_sparc.tuner.hub import upload_folder
from hf_sparc.tuner.model import apply_masks
from hf_sparc.workflows.config import CONFIG_NAME, SparcConfig

__all__ = ["CONFIG_NAME", "MASKS_NAME", "RELEVANCE_NAMES", "SparcConfig", "SparcPruner"]

MASKS_NAME = "masks.safetensors"
RELEVANCE_NAMES = {"undesired": "relevance_undesired.safetensors", "general": "relevance_general.safetensors"}


class SparcPruner(TrainerCallback, ExportableState):
    """Fit relevance, select what to cut, and prune — also as a ``Trainer`` callback.

    Example::

        pruner = SparcPruner(SparcConfig(level="neuron", count=100))
        pruner.fit(model, tokenizer, undesired=toxic_texts, general=general_texts)
        peft_model = pruner.prune(model)
        pruner.save_pretrained("out/")

    With both ``undesired`` and ``general`` data, components are chosen contrastively (paper
    Eq. 7: most negative ``R_general − R_undesired``). With only ``general`` data the least
    relevant are cut (compression, ``keep="highest"``); with only ``undesired`` data the most
    relevant to it are cut.

    As a ``TrainerCallback``: at ``on_train_begin`` it fits and selects if it has no masks yet
    (given reference data and a tokenizer at construction), zeroes the pruned weights in place,
    and re-zeroes them after every optimizer step, so fine-tuning (full or LoRA) cannot revive
    cut units. It is an ``ExportableState``: a ``Trainer`` checkpoint stores its config and masks
    (in ``trainer_state.json``), so a run resumed with ``resume_from_checkpoint`` (and
    ``TrainingArguments(restore_callback_states_from_checkpoint=True)``, transformers' switch for
    every stateful callback) keeps the same cut instead of attributing the fine-tuned model again.
    """

    def __init__(
        self,
        config: SparcConfig | dict[str, Any] | None = None,
        *,
        tokenizer=None,
        undesired: TextsLike | None = None,
        general: TextsLike | None = None,
    ) -> None:
        # a dict: the config as stored in a Trainer checkpoint (see state())
        self.config = SparcConfig.from_dict(config) if isinstance(config, dict) else config or SparcConfig()
        self.tokenizer = tokenizer
        self.reference = {"undesired": undesired, "general": general}
        self.relevance: dict[str, Relevance] = {}
        self.masks: Masks | None = None

    # -- fit / select / prune ------------------------------------------------------------------
    def fit(
        self,
        model: nn.Module,
        tokenizer=None,
        *,
        undesired: TextsLike | None = None,
        general: TextsLike | None = None,
    ) -> SparcPruner:
        """Compute and store relevance on the given reference sets, then select masks."""
        tokenizer = tokenizer if tokenizer is not None else self.tokenizer
        given = {"undesired": undesired, "general": general}
        if all(texts is None for texts in given.values()):
            given = self.reference
        if (
            all(texts is None for texts in given.values())
            and get_method(self.config.method, self.config.level).needs_data
        ):
            raise ValueError("fit() needs reference texts: pass undesired=... and/or general=...")
        c = self.config
        self.relevance = {}
        for role, texts in given.items():
            if texts is None:
                continue
            self.relevance[role] = attribute(
                model,
                texts,
                tokenizer=tokenizer,
                method=c.method,
                level=c.level,
                target_modules=c.target_modules,
                batch_size=c.batch_size,
                max_length=(c.undesired_max_length or c.max_length) if role == "undesired" else c.max_length,
                objective=c.objective,
                absolute=c.absolute,
                text_column=c.text_column,
                seed=c.seed,
                gradient_checkpointing=c.gradient_checkpointing,
                checkpoint_dir=None if c.checkpoint_dir is None else os.path.join(c.checkpoint_dir, role),
                checkpoint_every=c.checkpoint_every,
                max_memory=c.max_memory,
            )
        if not self.relevance:  # data-free methods (magnitude, random) score the weights alone
            self.relevance["general"] = attribute(
                model, method=c.method, level=c.level, target_modules=c.target_modules, seed=c.seed
            )
        self._model = model
        self.masks = self.select()
        return self

    def select(
        self, count: int | None = None, fraction: float | None = None, *, pool: Pool | None = None
    ) -> Masks:
        """Choose the components to cut from the stored relevance (no re-attribution).

        ``count``/``fraction`` override the config for this call (and become the pruner's masks).
        ``pool``: choose only among these components (e.g. another pruner's
        :meth:`candidate_pool`, for a like-for-like control); see :func:`hf_sparc.select`.
        """
        if not self.relevance:
            raise ValueError("No relevance yet: call fit() first (or load a fitted pruner).")
        c = self.config
        if count is not None or fraction is not None:
            amount = {"count": count, "fraction": fraction}
        else:
            amount = {"count": c.count, "fraction": c.fraction}
        model = getattr(self, "_model", None)
        common = dict(scope=c.scope, model=model, pool=pool, **amount)
        undesired, general = self.relevance.get("undesired"), self.relevance.get("general")
        if undesired is not None and general is not None:
            masks = select_contrastive(
                undesired=undesired, general=general, protect_general=c.protect_general, **common
            )
        elif general is not None:
            masks = select(general, keep=c.keep, **common)
        else:
            masks = select(undesired, keep="lowest", **common)
        self.masks = masks
        return masks

    def candidate_pool(self) -> Pool:
        """The components this pruner's contrastive selection may cut: those outside the
        ``protect_general`` share of largest general relevance (all, when it is 0).

        Raises:
            ValueError: Not fitted on general data.
        """
        if "general" not in self.relevance or "undesired" not in self.relevance:
            raise ValueError("A candidate pool needs a pruner fitted on undesired and general data.")
        return candidate_pool(self.relevance["general"], self.config.protect_general)

    def prune(self, model: nn.Module):
        """Return ``model`` wrapped in a ``PeftModel`` with the SPARC mask adapter active."""
        if self.masks is None:
            raise ValueError("No masks yet: call fit() (or select()) first.")
        return apply_masks(model, self.masks, adapter_name=self.config.adapter_name)

    # -- persistence ---------------------------------------------------------------------------
    def save_pretrained(self, save_directory: str | os.PathLike, *, overwrite: bool = False) -> None:
        """Write the config, the relevance of each reference set and the masks.

        All or nothing: the files are staged and committed with ``sparc_config.json`` last, so an
        interrupted save never leaves new masks next to old relevance. A pruner already saved in
        ``save_directory`` raises ``FileExistsError`` unless ``overwrite``.
        """

        def write(staging: Path) -> None:
            self.config.save_pretrained(staging)
            for role, relevance in self.relevance.items():
                relevance.save(staging / RELEVANCE_NAMES[role])
            if self.masks is not None:
                self.masks.save(staging / MASKS_NAME)

        owned = (CONFIG_NAME, MASKS_NAME, *RELEVANCE_NAMES.values())
        write_group(save_directory, write, marker=CONFIG_NAME, owned=owned, overwrite=overwrite)

    @classmethod
    def from_pretrained(
        cls,
        directory: str | os.PathLike,
        *,
        revision: str | None = None,
        token: str | None = None,
        cache_dir: str | os.PathLike | None = None,
    ) -> SparcPruner:
        """Load a pruner written by :meth:`save_pretrained`: a local folder, or a Hub repo id (at
        ``revision``, with ``token``, cached in ``cache_dir``)."""
        directory = _local_folder(directory, revision=revision, token=token, cache_dir=cache_dir)
        pruner = cls(SparcConfig.from_pretrained(directory))
        for role, name in RELEVANCE_NAMES.items():
            if (directory / name).is_file():
                pruner.relevance[role] = Relevance.load(directory / name)
        if (directory / MASKS_NAME).is_file():
            pruner.masks = Masks.load(directory / MASKS_NAME)
        return pruner

    def push_to_hub(
        self,
        repo_id: str,
        *,
        token: str | None = None,
        private: bool | None = None,
        revision: str | None = None,
        create_pr: bool = False,
        commit_message: str = "Upload SparcPruner",
    ) -> str:
        """Upload the saved pruner (config, relevance, masks, a ``README.md`` saying what it is and
        how to load it) to a Hub repository in one commit (``create_pr``: a pull request); returns
        its URL."""
        with tempfile.TemporaryDirectory() as folder:
            self.save_pretrained(folder)
            Path(folder, "README.md").write_text(self._card(repo_id), encoding="utf-8")
            return upload_folder(
                repo_id, folder, token=token, private=private, revision=revision,
                commit_message=commit_message, create_pr=create_pr,
            )  # fmt: skip

    def _card(self, repo_id: str) -> str:
        c = self.config
        masks = "no masks yet" if self.masks is None else repr(self.masks)
        sets = ", ".join(f"{role}: {rel.info.n_samples} texts" for role, rel in self.relevance.items())
        return (
            "---\nlibrary_name: hf_sparc\ntags:\n- hf_sparc\n- pruning\n- lrp\n---\n\n"
            f"# SparcPruner: {c.method} relevance at {c.level} level\n\n"
            f"Relevance ({sets or 'none'}) and the selection it gives ({masks}), reusable without "
            "attributing again:\n\n```python\nfrom hf_sparc import SparcPruner\n"
            f'pruner = SparcPruner.from_pretrained("{repo_id}")\npruner.select(count=...)  '
            "# no re-attribution\npeft_model = pruner.prune(model)\n```\n"
        )

    # -- ExportableState (Trainer checkpoints) -------------------------------------------------
    def state(self) -> dict[str, Any]:
        """What a ``Trainer`` checkpoint keeps of this pruner: its config and its masks (JSON)."""
        return {"args": {"config": self.config.to_dict()}, "attributes": {"masks_state": self.masks_state}}

    @property
    def masks_state(self) -> dict[str, Any] | None:
        """The masks as JSON-ready values (``None`` before fit); set it to restore them."""
        if self.masks is None:
            return None
        m = self.masks
        fields = {"level": m.level, "method": m.method, "rule": m.rule, "model_name": m.model_name}
        return {
            **fields,
            "n_samples": m.n_samples,
            "settings": dict(m.settings),
            "shapes": {name: list(shape) for name, shape in m.shapes.items()},
            "indices": {name: idx.tolist() for name, idx in m.items()},
            "scales": {name: scale.tolist() for name, scale in m.scales.items()},
        }

    @masks_state.setter
    def masks_state(self, values: dict[str, Any] | None) -> None:
        if values is None:
            self.masks = None
            return
        values = dict(values)
        indices = {name: torch.tensor(idx, dtype=torch.int64) for name, idx in values.pop("indices").items()}
        scales = {name: torch.tensor(s, dtype=torch.float32) for name, s in values.pop("scales", {}).items()}
        self.masks = Masks(indices=indices, scales=scales, **values)

    # -- TrainerCallback -----------------------------------------------------------------------
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if model is None:
            return
        if self.masks is None:
            if all(texts is None for texts in self.reference.values()):
                raise ValueError(
                    "SparcPruner has no masks and no reference data: fit() it first, or construct it "
                    "with tokenizer=..., undesired=... and/or general=..."
                )
            self.fit(model, self.tokenizer)
        self._zeroing_model = None  # masks may be new: rebuild the plan
        self.zero_pruned(model)

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        if model is not None:
            self.zero_pruned(model)

    def zero_pruned(self, model: nn.Module) -> None:
        """Set every pruned weight of ``model`` to exactly zero (in place)."""
        if self.masks is None:
            raise ValueError("No masks to enforce: fit() the pruner first.")
        if getattr(self, "_zeroing_model", None) is not model:
            self._zeroing = ZeroingPlan.build(model, self.masks)
            self._zeroing_model = model
        self._zeroing.apply()


def _local_folder(directory: str | os.PathLike, **hub: Any) -> Path:
    path = Path(directory)
    if path.is_dir():
        return path
    if isinstance(directory, str) and directory.count("/") == 1 and not path.exists():
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(directory, **hub))
    raise FileNotFoundError(f"No pruner folder at {directory}.")
