"""Compression: prune the least relevant weights (unstructured sparsity), paper Table 1.

:func:`compression_masks` scores every weight of the decoder-layer projections on general
reference text (``lrp``: ``Σₜ|R|`` per weight; ``lrp-l2``: ``√Σₜ R²``; ``lrp-wanda``: ``√Σₜ|R·C|``,
``C = w·x``; ``gradient-wanda``: the same with plain gradients, its control; ``wanda``: ``|W|·‖X‖₂``;
``magnitude``: ``|W|``) and prunes exactly ``⌊s·n⌋`` of them per scope: over all targeted weights
(``scope="global"``) or in every output row (``scope="row"``, Wanda's setting).
:func:`compare_compression` does that for several methods and scopes and measures perplexity
before/after, side by side.

Memory: weight-level relevance is one fp32 accumulator per targeted weight (one fp32 copy of the
targeted weights), streamed over the batches; only one method's scores are held at a time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal

from torch import nn

from hf_sparc.architectures import geometry, unwrap_model
from hf_sparc.attribution import METHODS, attribute
from hf_sparc.data.batching import TextsLike
from hf_sparc.masks import Masks
from hf_sparc.metrics import text_nlls
from hf_sparc.relevance import Relevance
from hf_sparc.selection import select
from hf_sparc.tuner.model import apply_masks

COMPRESSION_METHODS = ("lrp", "lrp-l2", "lrp-wanda", "gradient-wanda", "wanda", "magnitude")
COMPRESSION_SCOPES = ("global", "row")
CompressionScope = Literal["global", "row"]

__all__ = [
    "COMPRESSION_METHODS",
    "COMPRESSION_SCOPES",
    "CompressionRow",
    "check_sparsity",
    "compare_compression",
    "compression_masks",
    "masks_at_sparsity",
    "prune_count",
    "weight_relevance",
]


def check_sparsity(sparsity: float) -> None:
    """Raise ``ValueError`` unless ``sparsity`` is a number in ``(0, 1)``."""
    if isinstance(sparsity, bool) or not isinstance(sparsity, int | float) or not 0 < sparsity < 1:
        raise ValueError(f"sparsity must be a number in (0, 1), got {sparsity!r}.")


def prune_count(n: int, sparsity: float) -> int:
    """``⌊sparsity·n⌋``, reading ``sparsity`` as the decimal it was written as (0.29·100 = 29,
    where binary floating point would give 28.999…)."""
    check_sparsity(sparsity)
    return math.floor(Fraction(repr(float(sparsity))) * n)


def weight_relevance(
    model: nn.Module,
    tokenizer,
    texts: TextsLike | None,
    method: str,
    *,
    absolute: bool = True,
    objective: str = "next_token",
    target_modules: str | Sequence[str] | None = None,
    batch_size: int = 8,
    max_length: int = 128,
    progress: bool = True,
) -> Relevance:
    """Weight-level scores of ``method`` (one of :data:`COMPRESSION_METHODS`) for compression.

    ``absolute`` applies to ``lrp`` only: a weight whose relevance is large but changes sign
    between tokens is still needed on every one of them, so compression ranks ``Σₜ|R|``.
    ``objective`` (what the relevance explains, :data:`hf_sparc.attribution.OBJECTIVES`) applies
    to the methods with a backward pass only (LRP and their plain-gradient twins);
    ``"next_token_logprob"`` explains what perplexity measures.
    """
    if method not in COMPRESSION_METHODS:
        raise ValueError(
            f"Unknown compression method {method!r}; expected one of {list(COMPRESSION_METHODS)}"
        )
    return attribute(
        model,
        texts if method != "magnitude" else None,
        tokenizer=tokenizer,
        method=method,
        level="weight",
        target_modules=target_modules,
        batch_size=batch_size,
        max_length=max_length,
        absolute=absolute and method == "lrp",
        objective=objective if METHODS[method].needs_gradient else "next_token",
        progress=progress,
    )


def masks_at_sparsity(
    rel: Relevance, sparsity: float, scope: CompressionScope = "global", model: nn.Module | None = None
) -> Masks:
    """Prune the lowest-scored ``⌊s·n⌋`` weights over all of ``rel`` (``"global"``) or of every
    output row (``"row"``; needs ``model`` to tell which dimension of each weight is its output)."""
    if rel.level != "weight":
        raise ValueError(f"Compression needs weight-level scores, got {rel.level}-level.")
    if scope not in COMPRESSION_SCOPES:
        raise ValueError(f"scope must be one of {list(COMPRESSION_SCOPES)}, got {scope!r}.")
    if scope == "global":
        return select(rel, count=prune_count(rel.numel(), sparsity), scope="global")
    # select() splits a total over rows in proportion to width; within one module every row has
    # the same width, so one call per module gives each row exactly ⌊s·width⌋.
    indices, shapes, rule = {}, {}, ""
    for name, scores in rel.items():
        rows, width = _rows_and_width(model, name)
        one = Relevance({name: scores}, rel.info)
        count = rows * prune_count(width, sparsity)
        shapes[name] = tuple(scores.shape)
        if count:
            chosen = select(one, count=count, scope="row", model=model)
            indices.update(chosen.indices)
            rule = chosen.rule
    return Masks(
        level="weight",
        indices=indices,
        shapes=shapes,
        method=rel.method,
        rule=f"compression(scope='row', sparsity={sparsity}) via {rule}",
        model_name=rel.info.model_name,
        n_samples=rel.info.n_samples,
        settings=rel.info.settings,
    )


def _rows_and_width(model: nn.Module | None, name: str) -> tuple[int, int]:
    """Output rows and row width (input features) of the weight ``name``, whatever its orientation."""
    if model is None:
        raise ValueError("scope='row' needs model=... to know each weight's output dimension.")
    module = unwrap_model(model).get_submodule(name)
    return geometry.out_features(module), geometry.in_features(module)


def compression_masks(
    model: nn.Module,
    tokenizer,
    texts: TextsLike | None,
    *,
    sparsity: float = 0.5,
    method: str = "lrp",
    scope: CompressionScope = "global",
    absolute: bool = True,
    objective: str = "next_token",
    target_modules: str | Sequence[str] | None = None,
    batch_size: int = 8,
    max_length: int = 128,
    progress: bool = True,
) -> Masks:
    """Weight-level masks pruning the ``sparsity`` share of least relevant weights.

    Args:
        model: A supported causal LM (or ``PeftModel``).
        tokenizer: Its tokenizer.
        texts: General reference text (not needed for ``magnitude``).
        sparsity: Share of weights to prune, in ``(0, 1)``; exactly ``⌊s·n⌋`` per scope.
        method: One of :data:`COMPRESSION_METHODS`.
        scope: ``"global"`` (one ranking over all targeted weights) or ``"row"`` (per output row).
        absolute: LRP only: rank ``Σₜ|R|`` (default) instead of signed ``Σₜ R``.
        objective: Methods with a backward pass only: what is explained (default: the following
            tokens' logits).
        target_modules: As in :func:`hf_sparc.attribute` (default: every projection in the
            decoder layers; embeddings and the LM head are never pruned).
        batch_size, max_length, progress: As in :func:`hf_sparc.attribute`.
    """
    rel = weight_relevance(
        model,
        tokenizer,
        texts,
        method,
        absolute=absolute,
        objective=objective,
        target_modules=target_modules,
        batch_size=batch_size,
        max_length=max_length,
        progress=progress,
    )
    return masks_at_sparsity(rel, sparsity, scope, model)


@dataclass(frozen=True)
class CompressionRow:
    """One method × scope of :func:`compare_compression`.

    Attributes:
        method, scope, sparsity: What was pruned how.
        pruned, total: Pruned and targeted weights.
        perplexity: Evaluation perplexity of the pruned model.
        text_nlls, text_tokens: Per evaluation text, the summed NLL and the tokens it counts (what
            the perplexity is made of; paired comparisons between rows resample texts).
        masks: The masks, for the row named by ``keep_masks`` only (``None`` otherwise: at 50%
            weight sparsity each set of masks is as large as the weights).
    """

    method: str
    scope: str
    sparsity: float
    pruned: int
    total: int
    perplexity: float
    masks: Masks | None = field(default=None, repr=False, compare=False)
    text_nlls: tuple[float, ...] = field(default=(), repr=False)
    text_tokens: tuple[int, ...] = field(default=(), repr=False)

    def to_dict(self) -> dict[str, Any]:
        fields = ("method", "scope", "sparsity", "pruned", "total", "perplexity", "text_nlls", "text_tokens")
        return {k: getattr(self, k) for k in fields}


def compare_compression(
    model: nn.Module,
    tokenizer,
    reference: TextsLike,
    evaluation: Sequence[str],
    *,
    sparsity: float = 0.5,
    methods: Sequence[str] = COMPRESSION_METHODS,
    scopes: Sequence[CompressionScope] = COMPRESSION_SCOPES,
    absolute: bool = True,
    objective: str = "next_token",
    target_modules: str | Sequence[str] | None = None,
    batch_size: int = 8,
    max_length: int = 128,
    max_tokens: int | None = None,
    keep_masks: tuple[str, str] | None = None,
    progress: bool = True,
) -> tuple[float, list[CompressionRow]]:
    """Compress with every method × scope and measure evaluation perplexity of each.

    Scores are computed once per method and reused for every scope. ``model`` is left unmodified
    (each pruned model is a temporary SPARC adapter, unloaded after its evaluation).
    ``evaluation`` texts are scored with :func:`hf_sparc.metrics.perplexity` (``max_tokens``: a
    fixed token budget); ``keep_masks=(method, scope)`` keeps that row's masks in the result.

    Returns:
        ``(perplexity of the unpruned model, one row per method × scope)``.
    """

    check_sparsity(sparsity)
    unknown = [m for m in methods if m not in COMPRESSION_METHODS]
    if unknown or any(s not in COMPRESSION_SCOPES for s in scopes):
        raise ValueError(
            f"methods must be in {list(COMPRESSION_METHODS)} and scopes in {list(COMPRESSION_SCOPES)}."
        )

    def measure(m: nn.Module) -> tuple[float, tuple[float, ...], tuple[int, ...]]:
        nlls, counts = text_nlls(
            m,
            tokenizer,
            evaluation,
            max_length=max_length,
            batch_size=batch_size,
            max_tokens=max_tokens,
            progress=progress,
        )
        return math.exp(sum(nlls) / sum(counts)), tuple(nlls), tuple(counts)

    before = measure(model)[0]
    rows = []
    for method in methods:
        rel = weight_relevance(
            model,
            tokenizer,
            reference,
            method,
            absolute=absolute,
            objective=objective,
            target_modules=target_modules,
            batch_size=batch_size,
            max_length=max_length,
            progress=progress,
        )
        for scope in scopes:
            masks = masks_at_sparsity(rel, sparsity, scope, model)
            pruned = apply_masks(model, masks, adapter_name="compression")
            try:
                value, nlls, counts = measure(pruned)
            finally:
                pruned.unload()
            kept = masks if keep_masks == (method, scope) else None
            rows.append(CompressionRow(method, scope, sparsity, masks.total(), masks.size(), value, kept,
                                       nlls, counts))  # fmt: skip
            del masks, pruned
        del rel
    return before, rows
