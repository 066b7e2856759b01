"""Choose what to prune from relevance scores (paper Eq. 2, 3 and 7).

``select`` prunes the least relevant components (``keep="highest"``, compression) or the most
relevant ones (``keep="lowest"``, circuit-style); ``select_contrastive`` prunes the components
whose relevance for the undesired behaviour most exceeds their relevance for general behaviour.
Ties are broken by module order, then by index, so the same scores always give the same masks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Literal

import torch
from torch import nn

from hf_sparc.architectures import geometry, unwrap_model
from hf_sparc.masks import MASK_LEVELS, Masks
from hf_sparc.relevance import Relevance, all_finite

Keep = Literal["highest", "lowest"]
Scope = Literal["global", "layer", "row"]
_SCOPES = ("global", "layer", "row")


def select(
    rel: Relevance,
    *,
    count: int | None = None,
    fraction: float | None = None,
    keep: Keep = "highest",
    scope: Scope = "global",
    model: nn.Module | None = None,
    pool: Pool | None = None,
) -> Masks:
    """Select components to prune from relevance scores.

    Args:
        rel: Weight-, neuron- or head-level relevance.
        count: Number of components to prune in total (give this or ``fraction``).
        fraction: Share of all scored components to prune, in ``(0, 1)``.
        keep: ``"highest"`` keeps the most relevant components, i.e. prunes the ``count`` lowest
            scores (compression, paper Eq. 2); ``"lowest"`` prunes the highest scores.
        scope: ``"global"`` ranks all components of all modules together; ``"layer"`` prunes the
            same share of every module; ``"row"`` (weight level) the same share of every output
            row, Wanda-style. With ``"layer"``/``"row"`` the total is split in proportion to
            size (largest remainder), so exactly ``count`` components are pruned.
        model: Needed for ``scope="row"`` only: tells which dimension of each weight indexes its
            outputs (GPT-2 stores its projections ``[in, out]``, so an output row is a column).
        pool: Only these components may be pruned (``True`` per component, see
            :func:`candidate_pool`): a control that must choose among the same candidates as
            another method. ``None``: all.

    Returns:
        The :class:`~hf_sparc.Masks` to prune.

    Raises:
        ValueError: invalid ``count``/``fraction``/``keep``/``scope``, unsupported level, or
            NaN/Inf scores (the message names the module).
    """
    if keep not in ("highest", "lowest"):
        raise ValueError(f"keep must be 'highest' or 'lowest', got {keep!r}.")
    amount = f"count={count}" if count is not None else f"fraction={fraction}"
    rule = f"select(keep={keep!r}, scope={scope!r}, {amount}{_pool_note(pool)})"
    return _select(rel, keep == "lowest", count, fraction, scope, model, rule, pool)


def select_contrastive(
    undesired: Relevance,
    general: Relevance,
    *,
    count: int | None = None,
    fraction: float | None = None,
    scope: Scope = "global",
    model: nn.Module | None = None,
    protect_general: float = 0.0,
    pool: Pool | None = None,
) -> Masks:
    """Prune the components specific to an undesired behaviour (paper Eq. 7).

    Computes ``R_diff = general - undesired`` per component and prunes the ``count`` most
    negative ones: those far more relevant to the undesired behaviour than to general use.

    Args:
        undesired: Relevance on the reference texts of the behaviour to remove.
        general: Relevance on general texts, same level and modules.
        count, fraction, scope, model: As in :func:`select`.
        protect_general: Share in ``[0, 1)`` of the components with the largest ``|R_general|``
            that are never pruned. General relevance is heavy-tailed: plain Eq. 7 (``0.0``, the
            default) can pick units the whole model depends on (see docs/RESULTS.md, where
            ``0.5`` kept perplexity within 1.1% on SmolLM2 while Eq. 7 alone multiplied it).
        pool: As in :func:`select`; with ``protect_general`` both restrictions apply.
    """
    if not 0.0 <= protect_general < 1.0:
        raise ValueError(f"protect_general must be in [0, 1), got {protect_general}.")
    diff = general - undesired
    amount = f"count={count}" if count is not None else f"fraction={fraction}"
    rule = (
        f"select_contrastive(scope={scope!r}, {amount}, protect_general={protect_general}{_pool_note(pool)})"
    )
    if protect_general > 0.0:
        protected = candidate_pool(general, protect_general)
        pool = protected if pool is None else {name: pool[name] & protected[name] for name in protected}
    return _select(diff, False, count, fraction, scope, model, rule, pool)


def select_aura(expertise: Relevance, *, count: int | None = None) -> Masks:
    """AurA's intervention from expertise scores (:func:`hf_sparc.expertise`).

    ``count=None`` is AurA itself (Suau et al., 2024): every neuron with AUROC > 0.5 is dampened
    by ``α = 1 - 2·(AUROC - 0.5)`` (one minus its Gini coefficient), no hyper-parameter; the
    masks are soft (:attr:`Masks.scales`). ``count=k`` is the fixed-count variant ("Det0"): the
    ``k`` neurons with the highest AUROC are cut, for comparisons at an equal number of units.
    """
    if count is not None:
        return replace(select(expertise, count=count, keep="lowest"), rule=f"select_aura(count={count})")
    indices, scales = {}, {}
    for name, scores in expertise.items():
        scores = scores.detach().float().cpu()
        if not bool(((scores >= 0) & (scores <= 1)).all()):
            raise ValueError(f"Expertise of {name} is not an AUROC in [0, 1]; was it made by expertise()?")
        experts = torch.nonzero(scores > 0.5).flatten()
        if experts.numel():
            indices[name], scales[name] = experts, 1 - 2 * (scores[experts] - 0.5)
    return Masks(
        level=expertise.level,
        indices=indices,
        shapes={name: tuple(scores.shape) for name, scores in expertise.items()},
        method=expertise.method,
        rule="select_aura(dampen=1-2*(auroc-0.5) where auroc>0.5)",
        model_name=expertise.info.model_name,
        n_samples=expertise.info.n_samples,
        settings=expertise.info.settings,
        scales=scales,
    )


Pool = dict[str, torch.Tensor]
"""Per module, a boolean tensor shaped like its scores: ``True`` where a component may be pruned."""


def candidate_pool(general: Relevance, protect_general: float) -> Pool:
    """The components that ``protect_general`` leaves prunable: all but the ``protect_general``
    share with the largest ``|general|`` (ties at the cut stay prunable).

    What :func:`select_contrastive` chooses from; pass it as ``pool=`` to give a control
    (random, magnitude, another signal) the same candidates.
    """
    if not 0.0 <= protect_general < 1.0:
        raise ValueError(f"protect_general must be in [0, 1), got {protect_general}.")
    magnitudes = torch.cat([general[name].abs().flatten().float() for name in general])
    keep_below = magnitudes.numel() - math.ceil(protect_general * magnitudes.numel())
    cutoff = magnitudes.sort().values[max(keep_below - 1, 0)]
    return {name: general[name].abs().float() <= cutoff for name in general}


def _pool_note(pool: Pool | None) -> str:
    return "" if pool is None else f", pool={sum(int(p.sum()) for p in pool.values())} candidates"


# Score given to protected components: finite (so ranking stays well-defined) and above any real one.
_PROTECTED = torch.finfo(torch.float32).max


def _select(
    rel: Relevance,
    prune_highest: bool,
    count: int | None,
    fraction: float | None,
    scope: str,
    model: nn.Module | None,
    rule: str,
    pool: Pool | None = None,
) -> Masks:
    if rel.level not in MASK_LEVELS:
        raise ValueError(f"Cannot select from {rel.level}-level relevance; use weight, neuron or head level.")
    if scope not in _SCOPES:
        raise ValueError(f"scope must be one of {_SCOPES}, got {scope!r}.")
    if len(rel) == 0:
        raise ValueError("The relevance holds no modules to select from.")
    expected_dim = 2 if rel.level == "weight" else 1
    for name, scores in rel.items():
        if scores.dim() != expected_dim:
            shape = tuple(scores.shape)
            raise ValueError(f"{rel.level}-level relevance of {name} must be {expected_dim}-D, got {shape}.")
        if not all_finite(scores):
            raise ValueError(f"Relevance of {name} contains NaN or Inf; cannot rank it.")

    names = list(rel)

    def ranked(name: str) -> torch.Tensor:
        """Scores of one module such that the lowest are pruned first (one module in memory at a time)."""
        scores = rel[name].detach().cpu()
        # widening half precision is exact, and not every sort/selection kernel has half versions
        scores = scores.float() if scores.dtype in (torch.float16, torch.bfloat16) else scores
        scores = -scores if prune_highest else scores
        return scores if pool is None else torch.where(pool[name], scores.float(), _PROTECTED)

    k = _amount(count, fraction, sum(rel[name].numel() for name in names))
    if pool is not None:
        if set(pool) != set(names) or any(pool[n].shape != rel[n].shape for n in names):
            raise ValueError("pool= must have a boolean tensor shaped like the scores of every module.")
        available = sum(int(pool[name].sum()) for name in names)
        if k > available:
            raise ValueError(
                f"Only {available} components are unprotected candidates (protect_general, pool); "
                f"cannot prune {k}. Lower protect_general or the count."
            )
    if scope == "global":
        picked = _lowest_global((ranked(name) for name in names), k, len(names))
    elif scope == "layer":
        quotas = _apportion(k, torch.tensor([rel[name].numel() for name in names]))
        picked = [_lowest_in(ranked(name).flatten(), int(q)) for name, q in zip(names, quotas, strict=True)]
    else:
        picked = _row_scope(rel, names, ranked, k, model)

    return Masks(
        level=rel.level,
        indices={name: idx for name, idx in zip(names, picked, strict=True) if idx.numel()},
        shapes={name: tuple(rel[name].shape) for name in names},
        method=rel.method,
        rule=rule,
        model_name=rel.info.model_name,
        n_samples=rel.info.n_samples,
        settings=rel.info.settings,
    )


def _row_scope(
    rel: Relevance, names: list[str], ranked: Callable[[str], torch.Tensor], k: int, model: nn.Module | None
) -> list[torch.Tensor]:
    """The same share of every output row, as flat ids of each weight as stored."""
    if rel.level != "weight":
        raise ValueError(f"scope='row' needs weight-level relevance, this is {rel.level}-level.")
    if model is None:
        raise ValueError(
            "scope='row' needs model=... to know each weight's output dimension "
            "(GPT-2 weights are stored [in, out])."
        )
    base = unwrap_model(model)
    modules = [base.get_submodule(name) for name in names]
    # a shape-only [out, in] view of each stored weight: its shape gives the rows, its strides turn
    # (row, column) back into flat ids of the weight as stored
    views = [
        geometry.as_out_in(torch.empty(rel[name].shape, device="meta"), module)
        for name, module in zip(names, modules, strict=True)
    ]
    row_sizes = torch.cat([torch.full((view.shape[0],), view.shape[1]) for view in views])
    quotas = torch.split(_apportion(k, row_sizes), [view.shape[0] for view in views])
    picked = []
    for name, module, view, quota in zip(names, modules, views, quotas, strict=True):
        cols = _lowest_per_row(geometry.as_out_in(ranked(name), module), quota)
        rows = torch.repeat_interleave(torch.arange(view.shape[0]), quota)
        row_stride, col_stride = view.stride()
        picked.append((rows * row_stride + cols * col_stride).sort().values)
    return picked


def _amount(count: int | None, fraction: float | None, available: int) -> int:
    """Validate ``count``/``fraction`` and return the number of components to prune."""
    if (count is None) == (fraction is None):
        raise ValueError("Pass exactly one of count= or fraction=.")
    if count is not None:
        if isinstance(count, bool) or not isinstance(count, int):
            raise ValueError(f"count must be an int, got {type(count).__name__}.")
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}.")
        if count > available:
            raise ValueError(f"count={count} exceeds the {available} components available.")
        return count
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        raise ValueError(f"fraction must be a number in (0, 1), got {fraction!r}.")
    k = round(fraction * available)
    if k < 1:
        raise ValueError(f"fraction={fraction} of {available} components selects nothing.")
    return k


def _apportion(total: int, sizes: torch.Tensor) -> torch.Tensor:
    """Split ``total`` over units in proportion to ``sizes`` (largest remainder, ties by order)."""
    grand = int(sizes.sum())
    numerators = total * sizes.to(torch.int64)
    quotas = numerators // grand
    remainders = numerators % grand
    leftover = total - int(quotas.sum())
    # stable sort on -remainder: equal remainders go to earlier units first
    order = torch.sort(-remainders, stable=True).indices[:leftover]
    quotas[order] += 1
    return quotas


def _lowest_in(flat: torch.Tensor, k: int) -> torch.Tensor:
    """Sorted indices of the ``k`` lowest values; ties at the cut go to the lower index."""
    if k == 0:
        return torch.empty(0, dtype=torch.int64)
    # k-th value by selection (linear time, no full sort of a possibly huge weight matrix)
    cut = torch.kthvalue(flat, k).values
    below = torch.nonzero(flat < cut).flatten()
    at_cut = torch.nonzero(flat == cut).flatten()[: k - below.numel()]
    return torch.cat([below, at_cut]).sort().values


def _lowest_per_row(units: torch.Tensor, quota: torch.Tensor) -> torch.Tensor:
    """Column ids of the ``quota[r]`` lowest entries of each row ``r``, row by row."""
    order = torch.sort(units, dim=1, stable=True).indices
    keep = torch.arange(units.shape[1]).expand_as(order) < quota[:, None]
    cols = torch.where(keep, order, units.shape[1])  # sentinel past the end for unselected
    cols = cols.sort(dim=1).values
    return cols[cols < units.shape[1]]


def _lowest_global(scores: Iterable[torch.Tensor], k: int, n_modules: int) -> list[torch.Tensor]:
    """The ``k`` lowest scores over all modules, as sorted flat indices per module.

    Each module first contributes its own ``k`` lowest candidates, so the global ranking never
    holds all weights of a large model at once.
    """
    candidates, values = [], []
    for module_scores in scores:
        flat = module_scores.flatten()
        candidates.append(_lowest_in(flat, min(k, flat.numel())))
        values.append(flat[candidates[-1]])
    owner = torch.cat([torch.full((c.numel(),), i) for i, c in enumerate(candidates)])
    # candidates are concatenated in (module order, index) order, so a stable sort breaks ties that way
    chosen = torch.sort(torch.cat(values), stable=True).indices[:k]
    flat_ids = torch.cat(candidates)[chosen]
    who = owner[chosen]
    return [flat_ids[who == i].sort().values for i in range(n_modules)]
