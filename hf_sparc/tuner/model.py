"""`SparcModel`: the PEFT tuner that injects :class:`SparcLayer` wrappers."""

from __future__ import annotations

import math
import re
import warnings
from typing import TYPE_CHECKING, Any

import torch
from peft.tuners.tuners_utils import BaseTuner
from torch import nn

from hf_sparc.architectures import ArchitectureSpec, geometry, get_architecture, unwrap_model
from hf_sparc.masks import Masks
from hf_sparc.tuner.config import SparcAdapterConfig, indices_digest, shape_fingerprint
from hf_sparc.tuner.io import guard_save_pretrained
from hf_sparc.tuner.layer import SparcLayer

if TYPE_CHECKING:
    from peft import PeftModel


def check_fingerprint(model: nn.Module, config: SparcAdapterConfig) -> None:
    """Raise ``ValueError`` unless every module the adapter targets exists with the recorded shape.

    Runs before anything is modified, so a refused adapter leaves the base model untouched.
    """
    problems = []
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if config.model_type and model_type != config.model_type:
        problems.append(f"it is a {model_type!r} model")
    if config.num_layers is not None:
        layers = _num_layers(model)
        if layers != config.num_layers:
            problems.append(f"adapter expects {config.num_layers} decoder layers, model has {layers}")
    for name, expected in config.module_shapes.items():
        try:
            module = model.get_submodule(name)
        except AttributeError:
            problems.append(f"module {name} is missing (adapter expects weight shape {expected})")
            continue
        actual = list(geometry.weight_shape(module))
        if actual != list(expected):
            problems.append(
                f"module {name}: adapter expects weight shape {list(expected)}, model has {actual}"
            )
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise ValueError(
            f"This SPARC adapter (made for model_type {config.model_type!r}, fingerprint "
            f"{config.fingerprint}) does not fit this {model_type!r} model: {shown}. "
            "The model was not modified."
        )


def _num_layers(model: nn.Module) -> int | None:
    """Decoder layers of a supported model; None for an architecture hf_sparc does not know."""
    try:
        spec = get_architecture(model)
        return len(unwrap_model(model).get_submodule(spec.layers))
    except (ValueError, AttributeError):
        return None


class SparcModel(BaseTuner):
    """PEFT tuner for SPARC pruning masks (peft type ``"SPARC"``).

    Wraps exactly the modules listed in the config's ``module_shapes`` with :class:`SparcLayer`,
    after checking that each one exists with the recorded weight shape.
    """

    # Not "sparc_": PEFT warns whenever an adapter name occurs in the prefix, and "sparc" is the
    # natural adapter name.
    prefix: str = "pruning_"
    tuner_layer_cls = SparcLayer
    target_module_mapping: dict[str, list[str]] = {}  # noqa: RUF012 (BaseTuner's interface)

    def inject_adapter(self, model: nn.Module, adapter_name: str, *args: Any, **kwargs: Any) -> None:
        # Check here rather than in _pre_injection_hook: PEFT skips that hook when adding a second
        # adapter (PeftModel.add_adapter / load_adapter), and a wrong adapter must never get in.
        check_fingerprint(model, self.peft_config[adapter_name])
        super().inject_adapter(model, adapter_name, *args, **kwargs)

    def _prepare_adapter_config(
        self, peft_config: SparcAdapterConfig, model_config: dict
    ) -> SparcAdapterConfig:
        if not peft_config.module_shapes:
            raise ValueError("A SPARC adapter config must list its target modules in module_shapes.")
        return peft_config

    @staticmethod
    def _check_target_module_exists(peft_config: SparcAdapterConfig, key: str) -> bool:
        # exact names only: PEFT's suffix matching could also hit a same-named module elsewhere
        return key in peft_config.module_shapes

    def _create_and_replace(
        self,
        peft_config: SparcAdapterConfig,
        adapter_name: str,
        target: nn.Module,
        target_name: str,
        parent: nn.Module,
        current_key: str,
    ) -> None:
        count = peft_config.module_counts[current_key]
        group = 1
        if peft_config.level == "head":
            in_features = geometry.in_features(target)
            if in_features % peft_config.num_heads:
                raise ValueError(
                    f"module {current_key}: {in_features} input features do not split into "
                    f"{peft_config.num_heads} heads."
                )
            group = in_features // peft_config.num_heads
        digest = peft_config.module_digests.get(current_key)
        slot = (adapter_name, peft_config.level, count, group, digest, peft_config.soft)
        if isinstance(target, SparcLayer):
            target.update_layer(*slot)
        else:
            new_module = SparcLayer(target, current_key, *slot)
            self._replace_module(parent, target_name, new_module, target)

    @classmethod
    def _get_adapter_state_dict(cls, model, config, adapter_name, state_dict, unwanted_adapter_names):
        # indices as int32 when they fit (half the file); loading copies them into the int64 buffers
        saved = super()._get_adapter_state_dict(
            model, config, adapter_name, state_dict, unwanted_adapter_names
        )
        return {key: value.to(torch.int32) if _fits_int32(value) else value for key, value in saved.items()}

    def _mark_only_adapters_as_trainable(self, model: nn.Module) -> None:
        # A mask has nothing to train; leave requires_grad of the base model as the user set it.
        return


def _fits_int32(tensor: torch.Tensor) -> bool:
    return tensor.dtype == torch.int64 and (tensor.numel() == 0 or int(tensor.max()) < 2**31)


def _is_peft_model(model: nn.Module) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def apply_masks(model: nn.Module, masks: Masks, adapter_name: str = "default") -> PeftModel:
    """Attach ``masks`` to ``model`` as a SPARC PEFT adapter and make it the active adapter.

    Args:
        model: A supported ``*ForCausalLM`` model, or a ``PeftModel`` around one (the masks are then
            added as one more adapter; activate several at once with
            ``peft_model.base_model.set_adapter(["a", "b"])`` to prune their union).
        masks: From :func:`hf_sparc.select` / :func:`hf_sparc.select_contrastive`. Head-level
            masks keyed by attention modules act on the input of each attention output projection.
        adapter_name: PEFT adapter name. With the default name ``save_pretrained(dir)`` writes
            straight into ``dir``; PEFT puts other names into ``dir/<adapter_name>``.

    Returns:
        The ``PeftModel``; the base model's weights are not modified until you merge. Its
        ``save_pretrained`` refuses to overwrite another adapter unless given ``overwrite=True``.

    Raises:
        ValueError: The masks do not fit the model (the message names the module, expected and
            actual shape); nothing is modified then.
    """
    from peft import get_peft_model, set_peft_model_state_dict

    spec = get_architecture(model)
    base = unwrap_model(model)
    config = _adapter_config(base, spec, masks)
    if _is_peft_model(model):
        if adapter_name in model.peft_config:
            raise ValueError(f"The model already has an adapter named {adapter_name!r}.")
        model.add_adapter(adapter_name, config)
        peft_model = model
    else:
        with warnings.catch_warnings():
            # peft 0.21 calls transformers' deprecated `is_gradient_checkpointing`; not the user's concern
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            peft_model = get_peft_model(base, config, adapter_name=adapter_name)
    targets = {mask_key: target for target, mask_key in config.mask_modules.items()}
    state = {f"base_model.model.{targets[name]}.pruning_indices": idx for name, idx in masks.items()}
    if masks.soft:
        state.update(
            {f"base_model.model.{targets[name]}.pruning_scales": masks.scale(name) for name in masks}
        )
    set_peft_model_state_dict(peft_model, state, adapter_name=adapter_name)
    peft_model.set_adapter(adapter_name)
    guard_save_pretrained(peft_model)
    return peft_model


def _adapter_config(base: nn.Module, spec: ArchitectureSpec, masks: Masks) -> SparcAdapterConfig:
    """Build the adapter config for ``masks``, checking every masked module against ``base``."""
    num_heads = getattr(base.config, "num_attention_heads", None) if masks.level == "head" else None
    mask_modules, counts, shapes, digests = {}, {}, {}, {}
    for name, idx in masks.items():
        # a head mask acts on the input of its attention's output projection
        target, _ = geometry.unit_site(spec, masks.level, name)
        try:
            module = base.get_submodule(target)
        except AttributeError:
            raise ValueError(
                f"Masks name module {target}, which this {spec.name} model does not have."
            ) from None
        if not geometry.is_projection(module):
            raise ValueError(
                f"Module {target} is a {type(geometry.base_layer(module)).__name__}; SPARC masks apply to "
                "Linear/Conv1D."
            )
        expected = masks.shapes[name]
        actual = geometry.unit_shape(masks.level, module, num_heads)
        if tuple(expected) != actual:
            raise ValueError(
                f"Masks for {name} were selected for shape {tuple(expected)}, the model's {masks.level}s "
                f"there have shape {actual}."
            )
        mask_modules[target], counts[target] = name, idx.numel()
        shapes[target] = list(geometry.weight_shape(module))
        scales = masks.scale(name) if masks.soft else None
        digests[target] = indices_digest(masks.level, math.prod(actual), idx, scales)
    return SparcAdapterConfig(
        task_type="CAUSAL_LM",
        inference_mode=True,
        base_model_name_or_path=getattr(base, "name_or_path", None) or None,
        # the Hub commit the base weights came from, when loaded from the Hub (None for local/random)
        revision=getattr(base.config, "_commit_hash", None),
        level=masks.level,
        target_modules="^(?:" + "|".join(re.escape(t) for t in mask_modules) + ")$",
        module_counts=counts,
        module_shapes=shapes,
        fingerprint=shape_fingerprint(shapes),
        model_type=base.config.model_type,
        num_layers=len(base.get_submodule(spec.layers)),
        num_heads=num_heads,
        mask_modules=mask_modules,
        module_digests=digests,
        soft=masks.soft,
        provenance={
            "method": masks.method,
            "rule": masks.rule,
            "model_name": masks.model_name,
            "n_samples": masks.n_samples,
            "settings": dict(masks.settings),
        },
    )
