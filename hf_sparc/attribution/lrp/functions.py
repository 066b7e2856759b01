"""The three LRP rule functions of AttnLRP's Gradient×Input form (Achtibat et al., ICML 2024).

The same rules as lxt 2.1's ``lxt/efficient/rules.py`` (the AttnLRP authors' library, which stays
the test oracle: ``tests/test_attribution.py`` checks these against it bit for bit in float32),
written here so that hf_sparc needs no lxt at run time: lxt's wheel declares heavy dependencies
hf_sparc never uses, and its package cannot be imported on transformers 5.

One difference: the identity rule's ratio ``output / (input + ε)`` is formed in float32 whatever
the input dtype. In float16, ``input + 1e-10`` rounds to ``input`` and a zero input gives 0/0 =
NaN (lxt returns NaN relevance on fp16 models); in float32 and wider nothing changes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.autograd import Function

_EPSILON = 1e-10


class _IdentityRule(Function):
    @staticmethod
    def forward(ctx, fn: Callable[[torch.Tensor], torch.Tensor], input: torch.Tensor) -> torch.Tensor:
        output = fn(input)
        if input.requires_grad:
            wide = torch.promote_types(input.dtype, torch.float32)
            ctx.save_for_backward(output.to(wide) / (input.to(wide) + _EPSILON))
            ctx.dtype = input.dtype
        return output

    @staticmethod
    def backward(ctx, relevance: torch.Tensor):
        (ratio,) = ctx.saved_tensors
        return None, (ratio * relevance.to(ratio.dtype)).to(ctx.dtype)


class _DivideGradient(Function):
    @staticmethod
    def forward(ctx, input: torch.Tensor, factor: float) -> torch.Tensor:
        ctx.factor = factor
        return input

    @staticmethod
    def backward(ctx, relevance: torch.Tensor):
        return relevance / ctx.factor, None


def identity_rule(fn: Callable[[torch.Tensor], torch.Tensor], input: torch.Tensor) -> torch.Tensor:
    """``fn(input)`` whose backward passes relevance through unchanged (identity rule, AttnLRP
    Eq. 9): the gradient is ``fn(x) / x`` times the incoming one, so Gradient×Input at ``x``
    equals the relevance at ``fn(x)``. For element-wise non-linearities."""
    return _IdentityRule.apply(fn, input)


def divide_gradient(input: torch.Tensor, factor: float = 2) -> torch.Tensor:
    """Identity forward, gradient divided by ``factor`` (uniform rule on a product of ``factor``
    inputs, AttnLRP Eq. 7)."""
    return _DivideGradient.apply(input, factor)


def stop_gradient(input: torch.Tensor) -> torch.Tensor:
    """No gradient through ``input`` (CP-LRP's treatment of queries and keys)."""
    return input.detach()
