"""AurA's expertise score (Suau et al., ICML 2024, apple/ml-aura): how well each neuron's
max-pooled response separates positive (e.g. toxic) from negative sentences, as an AUROC.

The score needs no gradient and no general text: one forward per batch, the maximum of each
neuron's output over the real tokens of each sentence, then per neuron the probability that a
positive sentence's maximum exceeds a negative one's (ties count half), i.e. the AUROC that
ml-aura computes with ``sklearn.metrics.roc_auc_score``. :func:`hf_sparc.select_aura` turns it
into AurA's dampening (or its fixed-count variant).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from hf_sparc.architectures import get_architecture, unwrap_model
from hf_sparc.attribution.offload import execution_device
from hf_sparc.attribution.targets import resolve_targets
from hf_sparc.data.batching import TextsLike, batches, tokenize
from hf_sparc.relevance import Relevance, RelevanceInfo

METHOD = "aura-auroc"


def auroc(positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """Per column, the AUROC of ``positive`` ``[P, units]`` against ``negative`` ``[N, units]``
    responses: P(pos > neg) + ½ P(pos = neg), exact (Mann-Whitney U / (P·N))."""
    if positive.shape[0] == 0 or negative.shape[0] == 0:
        raise ValueError("AUROC needs at least one positive and one negative sentence.")
    sorted_negative = negative.double().T.contiguous().sort(dim=1).values  # [units, N]
    queries = positive.double().T.contiguous()  # [units, P]
    below = torch.searchsorted(sorted_negative, queries, right=False)
    at_or_below = torch.searchsorted(sorted_negative, queries, right=True)
    wins = below.double() + 0.5 * (at_or_below - below).double()
    return (wins.sum(dim=1) / (positive.shape[0] * negative.shape[0])).float()


@torch.no_grad()
def _max_responses(
    model: nn.Module,
    modules: dict[str, nn.Module],
    texts: TextsLike,
    tokenizer,
    batch_size: int,
    max_length: int,
    desc: str,
    progress: bool,
) -> dict[str, torch.Tensor]:
    """Per module, ``[texts, units]``: each unit's maximum output over each text's real tokens."""
    samples = tokenize(texts, tokenizer, max_length=max_length, require_explained=False)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    # where the inputs go, as in attribute(): the embeddings' (accelerate-aware) device
    device = execution_device(unwrap_model(model).get_input_embeddings())
    pooled: dict[str, list[torch.Tensor]] = {name: [] for name in modules}
    mask: list[torch.Tensor] = []

    def observe(name: str):
        def hook(_module, _inputs, output):
            real = mask[0].to(output.device)[..., None]
            lowest = torch.finfo(output.dtype).min
            pooled[name].append(output.masked_fill(~real, lowest).amax(dim=1).float().cpu())

        return hook

    handles = [module.register_forward_hook(observe(name)) for name, module in modules.items()]
    bar = tqdm(total=len(samples), desc=desc, unit="text", disable=not progress, leave=False)
    try:
        for batch in batches(samples, batch_size, pad):
            mask[:] = [batch.attention_mask.bool()]
            model(input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device))
            bar.update(batch.input_ids.shape[0])
    finally:
        bar.close()
        for handle in handles:
            handle.remove()
    return {name: torch.cat(values) for name, values in pooled.items()}


def expertise(
    model: nn.Module,
    positive: TextsLike,
    negative: TextsLike,
    *,
    tokenizer,
    target_modules: str | Sequence[str] | None = None,
    batch_size: int = 8,
    max_length: int = 128,
    progress: bool = True,
) -> Relevance:
    """AurA's expertise (AUROC) of every neuron for telling ``positive`` from ``negative`` texts.

    Args:
        model: A supported ``*ForCausalLM`` (or a ``PeftModel`` around one); run in eval mode.
        positive: Sentences showing the concept (AurA: toxic sentences).
        negative: Sentences without it (AurA: non-toxic ones).
        tokenizer: The model's tokenizer.
        target_modules: The projections whose output features are the neurons (default: the MLP
            up projections, the neuron level's default everywhere in hf_sparc; ml-aura also
            hooks GPT-2's ``mlp.c_proj``: pass it here to do the same).
        batch_size, max_length: As in :func:`hf_sparc.attribute`; texts are cut from the right.
        progress: Show a progress bar.

    Returns:
        Neuron-level :class:`~hf_sparc.Relevance` with method ``"aura-auroc"``: one AUROC in
        ``[0, 1]`` per neuron (0.5: no expertise), ``n_samples`` the number of sentences.
    """
    base = unwrap_model(model)
    spec = get_architecture(base)
    modules = resolve_targets(base, spec, "neuron", target_modules)
    was_training = model.training
    model.eval()
    try:
        pos = _max_responses(
            model, modules, positive, tokenizer, batch_size, max_length, "hf_sparc aura (positive)", progress
        )
        neg = _max_responses(
            model, modules, negative, tokenizer, batch_size, max_length, "hf_sparc aura (negative)", progress
        )
    finally:
        model.train(was_training)
    scores = {name: auroc(pos[name], neg[name]) for name in modules}
    n_pos, n_neg = next(iter(pos.values())).shape[0], next(iter(neg.values())).shape[0]
    info = RelevanceInfo(
        method=METHOD,
        level="neuron",
        n_samples=n_pos + n_neg,
        n_tokens=0,
        model_name=getattr(base.config, "_name_or_path", "") or "",
        settings={"positive": n_pos, "negative": n_neg, "pooling": "max", "max_length": max_length},
    )
    return Relevance(scores, info)
