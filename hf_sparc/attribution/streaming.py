"""One attribution run's passes: each owned batch forward (and backward), into the accumulators.

:class:`AttributionRun` holds what :func:`hf_sparc.attribute` decided before reading data;
:func:`stream_batches` runs the batches with the model in attribution mode, the LRP rules, the
collector's hooks and the input leaves in place, and undoes all of it afterwards.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint, set_checkpoint_early_stop
from tqdm.auto import tqdm
from transformers.utils import logging as hf_logging

from hf_sparc.architectures import ArchitectureSpec, decoder_layers
from hf_sparc.attribution.checkpoint import AccumulatorState, CheckpointStore
from hf_sparc.attribution.collector import Collector
from hf_sparc.attribution.distributed import Shard
from hf_sparc.attribution.lrp import lrp_rules
from hf_sparc.attribution.objectives import Objective
from hf_sparc.attribution.patches import InstancePatches
from hf_sparc.attribution.signals import AttributionMethod
from hf_sparc.data.batching import Batch, Sample, batches
from hf_sparc.relevance import RelevanceInfo


@dataclass(frozen=True)
class AttributionRun:
    """What one :func:`hf_sparc.attribute` call scores, and on which model.

    Attributes:
        model: The model as given (a ``PeftModel`` or not): its modes are switched and restored.
        base: The unwrapped ``*ForCausalLM`` model whose modules are scored.
        targets: Module name → module scored at ``level`` (empty for tokens).
        settings: The call's settings recorded in :class:`~hf_sparc.RelevanceInfo`.
    """

    model: nn.Module
    base: nn.Module
    spec: ArchitectureSpec
    method: AttributionMethod
    level: str
    objective: Objective
    targets: dict[str, nn.Module]
    device: torch.device
    settings: dict[str, Any]

    @property
    def explains_tokens(self) -> bool:
        """Whether every sample needs explained tokens (gradient methods with per-token objectives)."""
        return self.method.needs_gradient and self.objective.per_token

    @property
    def model_name(self) -> str:
        return str(getattr(self.base.config, "_name_or_path", ""))

    def info(self, n_samples: int, n_tokens: int, **token_info: Any) -> RelevanceInfo:
        return RelevanceInfo(
            method=self.method.name,
            level=self.level,
            n_samples=n_samples,
            n_tokens=n_tokens,
            model_name=self.model_name,
            settings=self.settings,
            **token_info,
        )


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

    def __init__(self, model: nn.Module, spec: ArchitectureSpec, requires_grad: bool) -> None:
        self.modules = [
            model.get_input_embeddings(),
            *(model.get_submodule(p) for p in spec.position_embeddings),
        ]
        self.requires_grad = requires_grad
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


def _checkpoint_layers(model: nn.Module, spec: ArchitectureSpec, patches: InstancePatches) -> None:
    """Gradient checkpointing of each decoder layer, on this instance only.

    Non-reentrant checkpointing keeps the original graph (so ``autograd.grad`` and the collector's
    tensor hooks work) and recomputes only the saved activations. transformers' own switch is not
    used: it acts only in training mode, and attribution runs in eval mode.
    """
    for _, layer in decoder_layers(model, spec):
        patches.shadow_forward(layer, lambda forward: functools.partial(_checkpointed, forward))


def _checkpointed(forward, *args, **kwargs):
    # Recomputation runs each layer to its end: stopped early (torch's default), it would leave
    # the last module's offloaded weight loaded (accelerate drops it after that module's forward).
    with set_checkpoint_early_stop(False):
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)


def _pass(
    run: AttributionRun,
    batch: Batch,
    index: int,
    collector: Collector,
    leaves: _InputLeaves,
    state: AccumulatorState,
) -> None:
    """One batch forward (and backward): the collector's hooks add to its sums on the way."""
    real = batch.attention_mask.bool()
    collector.start_batch(None if bool(real.all()) else real)
    leaves.batch_size, leaves.tensors = batch.input_ids.shape[0], []
    needs_gradient = run.method.needs_gradient
    with torch.set_grad_enabled(needs_gradient):
        hidden = run.base.base_model(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False
        ).last_hidden_state
        if not needs_gradient:
            return
        explained = run.objective.explained_output(run.base, hidden, batch)
        grads = torch.autograd.grad(explained.sum(), leaves.tensors)
        state.outputs[index] = explained.tolist()
        if run.level == "token":
            per_position = sum((leaf * g).sum(-1) for leaf, g in zip(leaves.tensors, grads, strict=True))
            lengths = batch.attention_mask.sum(1).tolist()
            state.tokens[index] = [per_position[i, :n].float().cpu() for i, n in enumerate(lengths)]


def stream_batches(
    run: AttributionRun,
    samples: list[Sample],
    collector: Collector,
    state: AccumulatorState,
    *,
    batch_size: int,
    pad_id: int,
    shard: Shard,
    store: CheckpointStore | None,
    gradient_checkpointing: bool,
    progress: bool,
) -> None:
    """Run every batch ``shard`` owns that ``state`` has not done yet, saving to ``store`` as it goes.

    Batches are cut from the whole set, then dealt: each is padded as it would be in one process.
    """
    sizes = [len(samples[i : i + batch_size]) for i in range(0, len(samples), batch_size)]
    owned = [index for index in range(len(sizes)) if shard.owns(index)]
    bar = tqdm(
        total=sum(sizes[i] for i in owned),
        initial=sum(sizes[i] for i in owned[: state.done]),
        desc=f"hf_sparc {run.method.name} ({run.level})",
        unit="text",
        disable=not (progress and hf_logging.is_progress_bar_enabled()) or shard.rank != 0,
    )
    leaves = _InputLeaves(run.base, run.spec, run.method.needs_gradient)
    with ExitStack() as stack:
        stack.enter_context(_attribution_mode(run.model))
        patches = InstancePatches()
        stack.callback(patches.restore)
        collector.attach(patches)
        leaves.attach(patches)
        if run.method.rules is not None:
            stack.enter_context(lrp_rules(run.base, run.method.rules))
        if gradient_checkpointing and run.method.needs_gradient:
            _checkpoint_layers(run.base, run.spec, patches)
        stack.callback(bar.close)
        remaining = set(owned[state.done :])
        for index, batch in enumerate(batches(samples, batch_size, pad_id)):
            if index not in remaining:
                continue
            _pass(run, batch.to(run.device), index, collector, leaves, state)
            state.n_real += int(batch.attention_mask.sum())
            state.done += 1
            if store:
                store.save(state)
            bar.update(batch.input_ids.shape[0])
    if store:
        store.save(state, force=True)
