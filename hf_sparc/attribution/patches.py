"""Reversible changes to one model *instance* (forward shadows, hooks), undone in reverse order.

Everything hf_sparc does to a model while attributing (LRP rules, collector hooks, input leaves,
per-layer checkpointing) goes through an :class:`InstancePatches`, so one ``restore()`` returns the
instance to exactly what it was and no class of ``transformers``/``torch`` is ever touched.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class InstancePatches:
    """Reversible changes to module *instances*: forward shadows and forward hooks."""

    def __init__(self) -> None:
        self._undo: list[Callable[[], None]] = []

    def shadow_forward(self, module: nn.Module, make: Callable[[Callable], Callable]) -> None:
        """Replace ``module.forward`` on this instance by ``make(current_forward)``."""
        had_own = "forward" in module.__dict__
        previous = module.__dict__.get("forward")
        module.forward = make(module.forward)

        def undo() -> None:
            if had_own:
                module.forward = previous
            else:
                del module.forward

        self._undo.append(undo)

    def map_output(self, module: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Pass ``module``'s output through ``fn`` (identity in forward, a rule in backward)."""
        handle = module.register_forward_hook(lambda _module, _inputs, output: fn(output))
        self._undo.append(handle.remove)

    def add(self, undo: Callable[[], None]) -> None:
        self._undo.append(undo)

    def restore(self) -> None:
        while self._undo:
            self._undo.pop()()
