"""`SparcConfig` and `SparcPruner`: the transformers-native workflow.

Configure like a ``GenerationConfig``, fit on reference texts, prune into a PEFT adapter, and
drop the pruner into a ``Trainer`` as a callback that keeps pruned weights at exactly zero.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import TrainerCallback

from hf_sparc._files import write_group
from hf_sparc.architectures import attention_output_name, get_architecture, unwrap_model
from hf_sparc.attribution import attribute
from hf_sparc.attribution.signals import get_method
from hf_sparc.data.batching import TextsLike
from hf_sparc.masks import Masks
from hf_sparc.relevance import Relevance
from hf_sparc.selection import select, select_contrastive

CONFIG_NAME = "sparc_config.json"
MASKS_NAME = "masks.safetensors"
RELEVANCE_NAMES = {"undesired": "relevance_undesired.safetensors", "general": "relevance_general.safetensors"}
_SCOPES = ("global", "layer", "row")
_DEFAULT_COUNT = 100


@dataclass
class SparcConfig:
    """Everything that decides which components a :class:`SparcPruner` cuts.

    Args:
        method: Attribution method (``"lrp"``, ``"cp-lrp"``, ``"gradient"``, ``"wanda"``,
            ``"magnitude"``, ``"activation"``, ``"random"``).
        level: ``"neuron"``, ``"head"`` or ``"weight"``.
        count: Components to prune (default 100 when ``fraction`` is not given).
        fraction: Share of the scored components to prune, in ``(0, 1)``; excludes ``count``.
        scope: ``"global"``, ``"layer"`` or ``"row"`` (weight level).
        keep: Without undesired data (compression): ``"highest"`` keeps the most relevant.
        protect_general: Contrastive selection: share of components with the largest general
            relevance that are never cut (see :func:`hf_sparc.select_contrastive`).
        target_modules, objective, absolute, max_length, batch_size, seed, text_column:
            Passed to :func:`hf_sparc.attribute`.
        undesired_max_length: Token budget of the undesired references (default ``max_length``):
            a prompt/continuation pair needs room for its prompt *and* the continuation explained.
        gradient_checkpointing: Recompute layer activations in the backward pass (less memory,
            same relevance); see :func:`hf_sparc.attribute`.
        checkpoint_dir: Make :meth:`SparcPruner.fit` resumable: each reference set saves its
            accumulators under ``checkpoint_dir/<undesired|general>`` every ``checkpoint_every``
            batches, and a restarted fit continues from them (bit-identical result).
        checkpoint_every: Batches between two saves of ``checkpoint_dir``.
        adapter_name: Name of the PEFT adapter that :meth:`SparcPruner.prune` adds.
    """

    method: str = "lrp"
    level: str = "neuron"
    count: int | None = None
    fraction: float | None = None
    scope: str = "global"
    keep: str = "highest"
    protect_general: float = 0.0
    target_modules: str | list[str] | None = None
    objective: str = "next_token"
    absolute: bool = False
    max_length: int = 128
    undesired_max_length: int | None = None
    batch_size: int = 8
    seed: int = 0
    text_column: str = "text"
    gradient_checkpointing: bool = False
    checkpoint_dir: str | None = None
    checkpoint_every: int = 10
    adapter_name: str = "sparc"
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        _check_field_types(self)
        if self.level == "token":
            raise ValueError(
                "level='token' scores inputs, not prunable components; use neuron, head or weight."
            )
        get_method(self.method, self.level)
        if self.count is not None and self.fraction is not None:
            raise ValueError(
                f"Give count or fraction, not both (count={self.count}, fraction={self.fraction})."
            )
        if self.count is None and self.fraction is None:
            self.count = _DEFAULT_COUNT
        if self.count is not None and (isinstance(self.count, bool) or not isinstance(self.count, int)):
            raise ValueError(f"count must be an integer, got {self.count!r}.")
        if self.count is not None and self.count <= 0:
            raise ValueError(f"count must be positive, got {self.count}.")
        if self.fraction is not None and not 0 < self.fraction < 1:
            raise ValueError(f"fraction must be in (0, 1), got {self.fraction}.")
        if self.scope not in _SCOPES:
            raise ValueError(f"Unknown scope {self.scope!r}; expected one of {list(_SCOPES)}.")
        if self.scope == "row" and self.level != "weight":
            raise ValueError("scope='row' needs level='weight'.")
        if not 0.0 <= self.protect_general < 1.0:
            raise ValueError(f"protect_general must be in [0, 1), got {self.protect_general}.")
        if self.keep not in ("highest", "lowest"):
            raise ValueError(f"keep must be 'highest' or 'lowest', got {self.keep!r}.")
        if self.undesired_max_length is not None and self.undesired_max_length < 1:
            raise ValueError(f"undesired_max_length must be positive, got {self.undesired_max_length}.")
        for name in ("max_length", "batch_size", "checkpoint_every"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}.")
        if not isinstance(self.gradient_checkpointing, bool):
            raise ValueError(
                f"gradient_checkpointing must be True or False, got {self.gradient_checkpointing!r}."
            )
        if isinstance(self.checkpoint_dir, os.PathLike):  # stored as str: the config is saved as JSON
            self.checkpoint_dir = os.fspath(self.checkpoint_dir)
        if self.checkpoint_dir is not None and not isinstance(self.checkpoint_dir, str):
            raise ValueError(f"checkpoint_dir must be a path string or None, got {self.checkpoint_dir!r}.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SparcConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Unknown SparcConfig field(s) {unknown}; known: {sorted(known)}.")
        return cls(**values)

    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        Path(save_directory).mkdir(parents=True, exist_ok=True)
        _atomic_write_text(Path(save_directory) / CONFIG_NAME, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> SparcConfig:
        path = Path(directory) / CONFIG_NAME
        if not path.is_file():
            raise FileNotFoundError(f"No {CONFIG_NAME} in {directory}.")
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"{path} is not valid JSON: {error}") from error
        if not isinstance(values, dict):
            raise ValueError(f"{path} must hold a JSON object.")
        return cls.from_dict(values)


# JSON types each SparcConfig field accepts (a sparc_config.json may come from anywhere)
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "count": (int, type(None)),
    "fraction": (float, int, type(None)),
    "protect_general": (float, int),
    "target_modules": (str, list, type(None)),
    "absolute": (bool,),
    "max_length": (int,),
    "undesired_max_length": (int, type(None)),
    "batch_size": (int,),
    "seed": (int,),
    "extra": (dict,),
    **dict.fromkeys(("method", "level", "scope", "keep", "objective", "text_column", "adapter_name"), (str,)),
}


def _check_field_types(config: SparcConfig) -> None:
    """Refuse a field of the wrong type with one ``ValueError`` naming it (``True`` is not a count)."""
    for name, types in _FIELD_TYPES.items():
        value = getattr(config, name)
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            expected = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise ValueError(f"SparcConfig.{name} must be {expected}, got {value!r}.")
    if isinstance(config.target_modules, list) and not all(isinstance(t, str) for t in config.target_modules):
        raise ValueError(f"SparcConfig.target_modules must list strings, got {config.target_modules!r}.")


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


class SparcPruner(TrainerCallback):
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
    cut units.
    """

    def __init__(
        self,
        config: SparcConfig | None = None,
        *,
        tokenizer=None,
        undesired: TextsLike | None = None,
        general: TextsLike | None = None,
    ) -> None:
        self.config = config or SparcConfig()
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
            )
        if not self.relevance:  # data-free methods (magnitude, random) score the weights alone
            self.relevance["general"] = attribute(
                model, method=c.method, level=c.level, target_modules=c.target_modules, seed=c.seed
            )
        self._model = model
        self.masks = self.select()
        return self

    def select(self, count: int | None = None, fraction: float | None = None) -> Masks:
        """Choose the components to cut from the stored relevance (no re-attribution).

        ``count``/``fraction`` override the config for this call (and become the pruner's masks).
        """
        if not self.relevance:
            raise ValueError("No relevance yet: call fit() first (or load a fitted pruner).")
        c = self.config
        if count is not None or fraction is not None:
            amount = {"count": count, "fraction": fraction}
        else:
            amount = {"count": c.count, "fraction": c.fraction}
        model = getattr(self, "_model", None)
        common = dict(scope=c.scope, model=model, **amount)
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

    def prune(self, model: nn.Module):
        """Return ``model`` wrapped in a ``PeftModel`` with the SPARC mask adapter active."""
        from hf_sparc.tuner.model import apply_masks

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
    def from_pretrained(cls, directory: str | os.PathLike) -> SparcPruner:
        """Load a pruner written by :meth:`save_pretrained` (a local folder or a Hub repo id)."""
        directory = _local_folder(directory)
        pruner = cls(SparcConfig.from_pretrained(directory))
        for role, name in RELEVANCE_NAMES.items():
            if (directory / name).is_file():
                pruner.relevance[role] = Relevance.load(directory / name)
        if (directory / MASKS_NAME).is_file():
            pruner.masks = Masks.load(directory / MASKS_NAME)
        return pruner

    def push_to_hub(self, repo_id: str, *, token: str | None = None, private: bool | None = None) -> str:
        """Upload the saved pruner (config, relevance, masks) to a Hub repository."""
        import tempfile

        from huggingface_hub import HfApi

        api = HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True)
        with tempfile.TemporaryDirectory() as folder:
            self.save_pretrained(folder)
            return api.upload_folder(
                repo_id=repo_id, folder_path=folder, commit_message="Upload SparcPruner"
            ).commit_url

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

    @torch.no_grad()
    def zero_pruned(self, model: nn.Module) -> None:
        """Set every pruned weight of ``model`` to exactly zero (in place)."""
        if getattr(self, "_zeroing_model", None) is not model:
            self._zeroing = _zeroing_plan(model, self.masks)
            self._zeroing_model = model
        for tensor, index, dim in self._zeroing:
            if dim is None:
                tensor.view(-1)[index] = 0
            else:
                tensor.index_fill_(dim, index, 0)


def _weights_of(module: nn.Module) -> nn.Module:
    """The layer that holds the real weight (inside PEFT wrappers such as LoRA or SPARC layers)."""
    get_base = getattr(module, "get_base_layer", None)
    return get_base() if callable(get_base) else module


def _lora_parts(module: nn.Module, part: str) -> list[torch.Tensor]:
    container = getattr(module, part, None)
    return [layer.weight for layer in container.values()] if isinstance(container, nn.ModuleDict) else []


def _zeroing_plan(
    model: nn.Module, masks: Masks | None
) -> list[tuple[torch.Tensor, torch.Tensor, int | None]]:
    """(tensor, indices, dim) triples whose zeroing prunes ``masks`` exactly, LoRA deltas included.

    ``dim=None`` means flat element indices. Neuron: output rows (+ bias, + LoRA B rows); head:
    the head's input columns of the output projection (+ LoRA A columns); weight: elements.
    """
    if masks is None:
        raise ValueError("No masks to enforce: fit() the pruner first.")
    base = unwrap_model(model)
    spec = get_architecture(base)
    plan = []
    for name, index in masks.items():
        if masks.level == "head":
            wrapper = base.get_submodule(attention_output_name(spec, name))
            layer = _weights_of(wrapper)
            head_dim = layer.weight.shape[0 if spec.transposed_weights else 1] // masks.shapes[name][0]
            columns = (index[:, None] * head_dim + torch.arange(head_dim)).flatten()
            columns = columns.to(layer.weight.device)
            plan.append((layer.weight, columns, 0 if spec.transposed_weights else 1))
            plan.extend((a, columns, 1) for a in _lora_parts(wrapper, "lora_A"))
            continue
        wrapper = base.get_submodule(name)
        layer = _weights_of(wrapper)
        index = index.to(layer.weight.device)
        if masks.level == "weight":
            if _lora_parts(wrapper, "lora_B"):
                raise ValueError(
                    f"{name}: weight-level masks cannot be kept exact under a LoRA delta on the same "
                    "module (B·A is dense); put LoRA on other modules, or use neuron/head level."
                )
            plan.append((layer.weight, index, None))
            continue
        plan.append((layer.weight, index, 1 if spec.transposed_weights else 0))
        if getattr(layer, "bias", None) is not None:
            plan.append((layer.bias, index, 0))
        plan.extend((b, index, 0) for b in _lora_parts(wrapper, "lora_B"))
    return plan


def _local_folder(directory: str | os.PathLike) -> Path:
    path = Path(directory)
    if path.is_dir():
        return path
    if isinstance(directory, str) and directory.count("/") == 1 and not path.exists():
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(directory))
    raise FileNotFoundError(f"No pruner folder at {directory}.")
