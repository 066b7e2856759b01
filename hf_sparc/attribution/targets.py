"""Which modules a level scores: PEFT-style ``target_modules`` resolution, defaults per level."""

from __future__ import annotations

import re
from collections.abc import Sequence

from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from hf_sparc.architectures import ArchitectureSpec, decoder_layers, is_projection, layer_part_names
from hf_sparc.architectures.geometry import base_layer


def default_targets(model: nn.Module, spec: ArchitectureSpec, level: str) -> list[str]:
    """MLP up-projections (neuron), attention modules (head), every projection inside the decoder
    layers (weight: the layers holding a weight, so a PEFT wrapper is listed by its base layer)."""
    if level == "neuron":
        return layer_part_names(model, spec, "mlp_up")
    if level == "head":
        return layer_part_names(model, spec, "attention")
    return [
        f"{prefix}.{name}"
        for prefix, layer in decoder_layers(model, spec)
        for name, module in layer.named_modules()
        if name and is_projection(module) and base_layer(module) is module
    ]


def _adapter_layer_around(model: nn.Module, name: str) -> str | None:
    """The PEFT adapter layer that is or holds module ``name`` (e.g. its ``base_layer``), if any."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if isinstance(model.get_submodule(prefix), BaseTunerLayer):
            return prefix
    return None


def _matching_names(
    model: nn.Module, spec: ArchitectureSpec, level: str, target_modules: str | Sequence[str]
) -> list[str]:
    every = [name for name, _ in model.named_modules() if name]
    if isinstance(target_modules, str):
        names = [n for n in every if re.fullmatch(target_modules, n)]
    else:
        names = [n for n in every if any(n == t or n.endswith(f".{t}") for t in target_modules)]
    if not names:
        raise ValueError(
            f"target_modules={target_modules!r} matched no module. Defaults for {level!r}: "
            f"{default_targets(model, spec, level)[:3]}…"
        )
    return names


def _check_target(model: nn.Module, spec: ArchitectureSpec, level: str, name: str, module: nn.Module) -> None:
    if level == "head":
        if name not in layer_part_names(model, spec, "attention"):
            raise ValueError(f"{name} is not an attention module; head level targets {spec.attention!r}.")
        return
    wrapper = _adapter_layer_around(model, name)
    if wrapper is not None:
        layer = model.get_submodule(wrapper)
        kind = f"{type(layer).__module__}.{type(layer).__name__}"
        raise ValueError(
            f"{name} is part of a PEFT adapter layer ({wrapper}: {kind}), whose masks or deltas "
            "change what the projection computes; attribute the merged model "
            "(peft_model.merge_and_unload(), on a copy to keep the adapter) or the base model."
        )
    if not is_projection(module):
        raise ValueError(
            f"{name} ({type(module).__name__}) is not a projection; {level} level targets "
            "nn.Linear / Conv1D modules."
        )


def resolve_targets(
    model: nn.Module, spec: ArchitectureSpec, level: str, target_modules: str | Sequence[str] | None
) -> dict[str, nn.Module]:
    """Module names → modules for ``level``, PEFT-style: a ``str`` is a regex matched against the
    full name, a list matches names equal to or ending with ``"." + item``.

    Raises:
        ValueError: nothing matched; a head target that is no attention module; a weight/neuron
            target that is no projection or sits inside a PEFT adapter layer.
    """
    if level == "token":
        return {}
    if target_modules is None:
        names = default_targets(model, spec, level)
    else:
        names = _matching_names(model, spec, level, target_modules)
    targets = {name: model.get_submodule(name) for name in names}
    for name, module in targets.items():
        _check_target(model, spec, level, name, module)
    return targets
