"""Reading the activations of a level's units where they live (one hook per module).

The collector (relevance, activation) and :func:`hf_sparc.workflows.insight.unit_contexts` both
read units here, so a neuron or head is always observed at the same place:
:func:`hf_sparc.architectures.geometry.unit_site` decides where.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from hf_sparc.architectures import ArchitectureSpec
from hf_sparc.architectures.geometry import unit_site


def hook_unit_site(
    model: nn.Module,
    spec: ArchitectureSpec,
    level: str,
    name: str,
    observe: Callable[[torch.Tensor], None],
) -> RemovableHandle:
    """Call ``observe(site)`` on every forward with the tensor holding the units of ``level`` in
    module ``name`` (``[batch, seq, features]``: a module output, or the heads' concatenation).

    The hook runs before any other hook of that module (LRP rules map outputs in hooks too), so
    ``site`` is the plain activation.

    Raises:
        AttributeError: ``model`` has no module at the site.
    """
    site_name, where = unit_site(spec, level, name)
    site = model.get_submodule(site_name)
    if where == "input":
        return site.register_forward_pre_hook(lambda _module, inputs: observe(inputs[0]), prepend=True)
    return site.register_forward_hook(lambda _module, _inputs, output: observe(output), prepend=True)
