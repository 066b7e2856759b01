"""`attribute()`: one forward + one backward per batch, streamed into fp32 accumulators."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Literal

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint
from tqdm.auto import tqdm
from transformers.utils import logging as hf_logging

from hf_sparc.architectures import ArchitectureSpec, decoder_layers, get_architecture, unwrap_model
from hf_sparc.attribution.checkpoint import AccumulatorState, CheckpointStore, run_fingerprint
from hf_sparc.attribution.collector import Collector, data_free_scores, resolve_targets
from hf_sparc.attribution.distributed import Shard, current_shard
from hf_sparc.attribution.lrp import lrp_rules
from hf_sparc.attribution.offload import check_loaded, execution_device, parameter
from hf_sparc.attribution.patches import InstancePatches
from hf_sparc.attribution.signals import get_method
from hf_sparc.data.batching import Batch, Sample, TextsLike, batches, tokenize
from hf_sparc.relevance import Relevance, RelevanceInfo

OBJECTIVES = ("next_token", "next_token_centered", "last_token_max")
# Objectives that explain the following token at every explained position (teacher forcing).
_PER_TOKEN = ("next_token", "next_token_centered")
Level = Literal["weight", "neuron", "head", "token"]


@contextmanager
def _attribution_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode (no dropout) and frozen parameters, restored exactly afterwards.

    Freezing means no parameter gradient is ever computed or stored: relevance only needs
    gradients of activations, which flow from the input-embedding leaves.
    """
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        model.eval()
        for parameter, _ in flags:
            parameter.requires_grad_(False)
        yield
    finally:
        for module, training in modes:
            module.training = training
        for parameter, flag in flags:
            parameter.requires_grad_(flag)


class _InputLeaves:
    """Makes embedding outputs the leaves of the backward pass and keeps them per batch.

    Position embeddings broadcast over the batch (GPT-2) are expanded first, so each text's
    token relevance only counts its own gradient.
    """

    def __init__(self, modules: list[nn.Module], requires_grad: bool) -> None:
        self.modules, self.requires_grad = modules, requires_grad
        self.tensors: list[torch.Tensor] = []
        self.batch_size = 1

    def attach(self, patches: InstancePatches) -> None:
        for module in self.modules:
            patches.add(module.register_forward_hook(self._hook).remove)

    def _hook(self, _module, _inputs, output: torch.Tensor) -> torch.Tensor:
        leaf = output.detach()
        if leaf.shape[0] != self.batch_size:
            leaf = leaf.expand(self.batch_size, *leaf.shape[1:])
        leaf = leaf.clone().requires_grad_(self.requires_grad)
        self.tensors.append(leaf)
        return leaf


def _embedding_modules(model: nn.Module, spec: ArchitectureSpec) -> list[nn.Module]:
    return [model.get_input_embeddings(), *(model.get_submodule(p) for p in spec.position_embeddings)]


def _explained_output(objective: str, model: nn.Module, hidden: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Per-text explained output ``[batch]`` computed without full-vocabulary logits where possible."""
    head = model.get_output_embeddings()
    if objective in _PER_TOKEN:
        rows = batch.explained.nonzero(as_tuple=True)
        weight, bias = parameter(head, "weight"), parameter(head, "bias")
        ids = batch.targets[rows].to(weight.device)
        vectors = weight[ids].float()
        if objective == "next_token_centered":
            # logit minus the mean logit over the vocabulary: what raises this token against the
            # others, not what raises every logit at once (softmax ignores a common shift)
            vectors = vectors - weight.float().mean(0)
        logits = (hidden[rows].float() * vectors.to(hidden.device)).sum(-1)
        if bias is not None:
            shift = bias.float().mean() if objective == "next_token_centered" else 0.0
            logits = logits + (bias[ids].float() - shift).to(hidden.device)
        return torch.zeros(hidden.shape[0], device=hidden.device).index_add(0, rows[0], logits)
    last = batch.attention_mask.sum(1) - 1
    logits = head(hidden[torch.arange(hidden.shape[0], device=hidden.device), last]).float()
    return logits.max(-1).values


def _checkpoint_layers(model: nn.Module, spec: ArchitectureSpec, patches: InstancePatches) -> None:
    """Gradient checkpointing of each decoder layer, on this instance only.

    Non-reentrant checkpointing keeps the original graph (so ``autograd.grad`` and the collector's
    tensor hooks work) and recomputes only the saved activations. transformers' own switch is not
    used: it acts only in training mode, and attribution runs in eval mode.
    """
    for _, layer in decoder_layers(model, spec):
        patches.shadow_forward(
            layer, lambda forward: functools.partial(checkpoint, forward, use_reentrant=False)
        )


def _check_positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")


def attribute(
    model: nn.Module,
    texts: TextsLike | None = None,
    *,
    tokenizer=None,
    method: str = "lrp",
    level: Level = "neuron",
    target_modules: str | Sequence[str] | None = None,
    batch_size: int = 8,
    max_length: int = 128,
    objective: str = "next_token",
    absolute: bool = False,
    text_column: str = "text",
    seed: int = 0,
    gradient_checkpointing: bool = False,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 10,
    distributed: bool | None = None,
    progress: bool = True,
) -> Relevance:
    """Relevance of ``model``'s components for explaining its outputs on ``texts``.

    Relevance of component k is the mean over reference samples of its per-sample relevance
    (paper Eq. 1); a sample's relevance sums over its tokens. LRP runs in Gradient×Input form:
    one forward and one backward per batch, with lxt's rules applied to this model instance only.

    Args:
        model: A supported ``*ForCausalLM`` (Llama, Mistral, Qwen2/3, OPT, GPT-2, Gemma3) or a
            ``PeftModel`` around one. Its mode and ``requires_grad`` flags are restored afterwards.
        texts: ``list[str]``, dicts with ``prompt``/``continuation`` (only continuation tokens are
            explained) or with ``text_column``, or a ``datasets.Dataset``. Not needed for
            ``magnitude``/``random``.
        tokenizer: The model's tokenizer.
        method: ``"lrp"`` (AttnLRP), ``"cp-lrp"``, ``"gradient"``, ``"wanda"``, ``"magnitude"``,
            ``"activation"`` or ``"random"``.
        level: ``"weight"``, ``"neuron"``, ``"head"`` or ``"token"``.
        target_modules: Module names to score: a regex (``str``, full match) or a list of name
            suffixes, as in PEFT. ``None``: MLP up-projections (neuron), attention modules
            (head), every projection inside the decoder layers (weight).
        batch_size: Texts per forward/backward pass. Results do not depend on it.
        max_length: Texts are truncated to this many tokens (with a warning).
        objective: ``"next_token"``: the logits of the actually-following tokens (teacher forcing),
            continuation tokens only for prompt/continuation pairs. ``"next_token_centered"``: the
            same positions, each token's logit minus the mean logit over the vocabulary (what
            raises that token against the others; softmax ignores a shift of all logits).
            ``"last_token_max"``: the top logit at the last position.
        absolute: Sum ``|R|`` over token positions instead of signed ``R`` (the authors' earlier
            pruning work used ``|R|``). Signed (default) is the paper's Eq. 1 as written.
        text_column: Column holding plain text in dicts / datasets.
        seed: Seed of the ``random`` method (no global RNG is touched).
        gradient_checkpointing: Recompute each decoder layer's activations in the backward pass
            instead of keeping them (gradient methods): less memory for about one more forward.
            Results are unchanged.
        checkpoint_dir: Save the accumulators there every ``checkpoint_every`` batches (atomically);
            a later call with the same arguments resumes from them and gives bit-identical relevance.
            Runs with different settings, texts or process counts are refused, not mixed.
        checkpoint_every: Batches between two saves of ``checkpoint_dir``.
        distributed: ``None`` (default): when launched as several processes (``accelerate launch``,
            ``torchrun``), each process attributes its share of the batches and all get the summed
            result; every process must pass the same texts. ``False``: each process works alone.
        progress: Show a tqdm bar (also silenced by transformers' progress-bar setting; shown by the
            first process only).

    Returns:
        A :class:`~hf_sparc.Relevance` keyed by module name.
    """
    attribution = get_method(method, level)
    if objective not in OBJECTIVES:
        raise ValueError(f"Unknown objective {objective!r}; expected one of {list(OBJECTIVES)}.")
    _check_positive("checkpoint_every", checkpoint_every)
    base = unwrap_model(model)
    spec = get_architecture(base)
    check_loaded(base)
    device = execution_device(base.get_input_embeddings())
    targets = resolve_targets(base, spec, level, target_modules)
    settings = {
        "objective": objective,
        "absolute": absolute,
        "max_length": max_length,
        "batch_size": batch_size,
        "seed": seed,
        "target_modules": target_modules if isinstance(target_modules, str | None) else list(target_modules),
    }

    def info(n_samples: int, n_tokens: int, **token_info) -> RelevanceInfo:
        return RelevanceInfo(
            method=method,
            level=level,
            n_samples=n_samples,
            n_tokens=n_tokens,
            model_name=str(getattr(base.config, "_name_or_path", "")),
            settings=settings,
            **token_info,
        )

    if not attribution.needs_data:
        return Relevance(data_free_scores(base, spec, level, attribution, targets, seed), info(0, 0))

    samples = tokenize(
        texts,
        tokenizer,
        max_length=max_length,
        text_column=text_column,
        require_explained=attribution.needs_gradient and objective in _PER_TOKEN,
    )
    pad_id = getattr(tokenizer, "pad_token_id", None) or 0
    shard = current_shard(distributed)
    store = None
    if checkpoint_dir is not None:
        description = {
            "method": method,
            "level": level,
            "settings": settings,
            "targets": list(targets),
            "pad_id": pad_id,
            "model": info(0, 0).model_name,
            "parameters": sum(p.numel() for p in base.parameters()),
            "shard": [shard.rank, shard.world_size],
        }
        store = CheckpointStore(
            checkpoint_dir, run_fingerprint(samples, description), shard, checkpoint_every
        )
    state = (store.load() if store else None) or AccumulatorState()
    collector = Collector(base, spec, level, attribution, targets, absolute)
    collector.sums = state.sums
    leaves = _InputLeaves(_embedding_modules(base, spec), attribution.needs_gradient)
    # Batches are cut from the whole set, then dealt: each is padded as it would be in one process.
    sizes = [len(samples[i : i + batch_size]) for i in range(0, len(samples), batch_size)]
    owned = [index for index in range(len(sizes)) if shard.owns(index)]
    bar = tqdm(
        total=sum(sizes[i] for i in owned),
        initial=sum(sizes[i] for i in owned[: state.done]),
        desc=f"hf_sparc {method} ({level})",
        unit="text",
        disable=not (progress and hf_logging.is_progress_bar_enabled()) or shard.rank != 0,
    )
    with ExitStack() as stack:
        stack.enter_context(_attribution_mode(model))
        patches = InstancePatches()
        stack.callback(patches.restore)
        collector.attach(patches)
        leaves.attach(patches)
        if attribution.rules is not None:
            stack.enter_context(lrp_rules(base, attribution.rules))
        if gradient_checkpointing and attribution.needs_gradient:
            _checkpoint_layers(base, spec, patches)
        stack.callback(bar.close)
        remaining = set(owned[state.done :])
        for index, batch in enumerate(batches(samples, batch_size, pad_id)):
            if index not in remaining:
                continue
            batch = batch.to(device)
            real = batch.attention_mask.bool()
            collector.select = None if bool(real.all()) else real
            leaves.batch_size, leaves.tensors = batch.input_ids.shape[0], []
            with torch.set_grad_enabled(attribution.needs_gradient):
                hidden = base.base_model(
                    input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False
                ).last_hidden_state
                if attribution.needs_gradient:
                    explained = _explained_output(objective, base, hidden, batch)
                    grads = torch.autograd.grad(explained.sum(), leaves.tensors)
                    state.outputs[index] = explained.tolist()
                    if level == "token":
                        per_position = sum(
                            (leaf * g).sum(-1) for leaf, g in zip(leaves.tensors, grads, strict=True)
                        )
                        lengths = batch.attention_mask.sum(1).tolist()
                        state.tokens[index] = [
                            per_position[i, :n].float().cpu() for i, n in enumerate(lengths)
                        ]
            state.n_real += int(batch.attention_mask.sum())
            state.done += 1
            if store:
                store.save(state)
            bar.update(batch.input_ids.shape[0])
    if store:
        store.save(state, force=True)
    return _result(state, shard, collector, samples, objective, absolute, base, device, info)


def _result(
    state: AccumulatorState,
    shard: Shard,
    collector: Collector,
    samples: list[Sample],
    objective: str,
    absolute: bool,
    base: nn.Module,
    device: torch.device,
    info: Callable[..., RelevanceInfo],
) -> Relevance:
    """Combine this process's accumulators with the other processes' into the Relevance."""
    shard.all_reduce(collector.complete_sums(device) if collector.level != "token" else {})
    n_real = sum(shard.all_gather(state.n_real))
    outputs, tokens = {}, {}
    for part_outputs, part_tokens in shard.all_gather((state.outputs, state.tokens)):
        outputs.update(part_outputs)
        tokens.update(part_tokens)
    ordered_outputs = [value for index in sorted(outputs) for value in outputs[index]]
    n_tokens = sum(s.n_explained for s in samples) if objective in _PER_TOKEN else len(samples)
    if collector.level == "token":
        scores = torch.cat([t.abs() if absolute else t for index in sorted(tokens) for t in tokens[index]])
        name = next(n for n, m in base.named_modules() if m is base.get_input_embeddings())
        return Relevance(
            {name: scores},
            info(
                len(samples),
                n_tokens,
                token_counts=[len(s.input_ids) for s in samples],
                token_ids=[list(s.input_ids) for s in samples],
                outputs=ordered_outputs,
            ),
        )
    scores = collector.scores(len(samples), n_real)
    return Relevance(scores, info(len(samples), n_tokens, outputs=ordered_outputs))
