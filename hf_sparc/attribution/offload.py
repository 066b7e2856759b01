"""Where a module's weights really are, for models dispatched or offloaded by ``accelerate``.

With ``device_map="auto"`` (or ``accelerate.cpu_offload`` / ``disk_offload``) a module's
parameters may sit on the ``meta`` device outside its own forward: accelerate's hook loads them
from a ``weights_map`` just before the forward and drops them right after. Attribution reads
weights outside forwards (output-embedding rows, weight relevance in backward hooks, Wanda and
magnitude scores), so it asks here instead of reading ``module.weight`` directly.
"""

from __future__ import annotations

import torch
from torch import nn


def _hooks(module: nn.Module) -> list:
    hook = getattr(module, "_hf_hook", None)
    if hook is None:
        return []
    return list(getattr(hook, "hooks", (hook,)))  # accelerate's SequentialHook holds several


def _offloaded_value(module: nn.Module, name: str) -> torch.Tensor | None:
    for hook in _hooks(module):
        weights_map = getattr(hook, "weights_map", None)
        if getattr(hook, "offload", False) and weights_map is not None and name in weights_map:
            return weights_map[name]
    return None


def parameter(module: nn.Module, name: str = "weight") -> torch.Tensor | None:
    """``module.<name>`` with real values, also when accelerate keeps it offloaded (``None`` if the
    module has no such parameter)."""
    tensor = getattr(module, name, None)
    if tensor is None or tensor.device.type != "meta":
        return tensor
    offloaded = _offloaded_value(module, name)
    if offloaded is None:
        raise ValueError(
            f"{type(module).__name__}.{name} is on the 'meta' device and no accelerate hook holds its "
            "values; load real weights before attributing."
        )
    return offloaded


def execution_device(module: nn.Module) -> torch.device:
    """The device ``module`` computes on: accelerate's execution device, else its weight's."""
    for hook in _hooks(module):
        device = getattr(hook, "execution_device", None)
        if device is not None:
            return torch.device(device if not isinstance(device, int) else f"cuda:{device}")
    return module.weight.device


def check_loaded(model: nn.Module) -> None:
    """Raise when a parameter is on ``meta`` without an accelerate hook that can load it."""
    if next(model.parameters(), None) is None:
        raise ValueError("The model has no parameters.")
    for module in model.modules():
        for name, tensor in module.named_parameters(recurse=False):
            if tensor.device.type == "meta" and _offloaded_value(module, name) is None:
                raise ValueError(
                    "The model has weights on the 'meta' device (not loaded); load real weights before "
                    "attributing."
                )
