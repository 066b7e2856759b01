"""Reading the :class:`~hf_sparc.Masks` back out of a SPARC adapter loaded in a ``PeftModel``."""

from __future__ import annotations

from torch import nn

from hf_sparc.architectures import unwrap_model
from hf_sparc.architectures.geometry import weight_shape
from hf_sparc.masks import Masks
from hf_sparc.tuner.config import SparcAdapterConfig
from hf_sparc.tuner.layer import SparcLayer

__all__ = ["adapter_masks"]


def _sparc_config(peft_model: nn.Module, adapter_name: str | None) -> tuple[str, SparcAdapterConfig]:
    configs = getattr(peft_model, "peft_config", None)
    if not configs:
        raise ValueError("The model holds no adapter; load one with PeftModel.from_pretrained(base, dir).")
    if adapter_name is None:
        active = list(peft_model.active_adapters)
        if len(active) != 1:
            raise ValueError(f"Several adapters are active ({active}); say which one with adapter_name=.")
        adapter_name = active[0]
    config = configs.get(adapter_name)
    if config is None or getattr(config, "peft_type", None) != "SPARC":
        raise ValueError(f"{adapter_name!r} is not a SPARC adapter here (adapters: {list(configs)}).")
    return adapter_name, config


def adapter_masks(peft_model: nn.Module, adapter_name: str | None = None) -> Masks:
    """The :class:`~hf_sparc.Masks` of one SPARC adapter of ``peft_model``.

    An adapter records only the modules it masks, so ``shapes`` (and ``size()``) cover those
    modules only: a layer in which nothing is pruned is not counted.

    Args:
        peft_model: A ``PeftModel`` holding SPARC adapters (as loaded by ``PeftModel.from_pretrained``).
        adapter_name: Which adapter; default: the only active one.

    Raises:
        ValueError: no such SPARC adapter, or several are active and none was named.
    """
    adapter_name, config = _sparc_config(peft_model, adapter_name)
    indices, shapes, scales = {}, {}, {}
    for name, layer in unwrap_model(peft_model).named_modules():
        if not isinstance(layer, SparcLayer) or adapter_name not in layer.pruning_indices:
            continue
        key = config.mask_modules.get(name, name)
        if config.level == "weight":
            shapes[key] = weight_shape(layer)
        else:
            shapes[key] = (layer.n_components(adapter_name),)
        indices[key] = layer.indices(adapter_name).cpu()
        if config.soft:
            scales[key] = layer.scales(adapter_name).cpu()
    provenance = dict(config.provenance)
    return Masks(
        level=config.level,
        indices=indices,
        shapes=shapes,
        method=str(provenance.get("method", "")),
        rule=str(provenance.get("rule", "")),
        model_name=str(provenance.get("model_name", "")),
        n_samples=int(provenance.get("n_samples", 0)),
        settings=provenance.get("settings", {}),
        scales=scales,
    )
