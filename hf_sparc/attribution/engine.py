"""`attribute()`: one forward + one backward per batch, streamed into fp32 accumulators."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from contextlib import nullcontext
from tempfile import TemporaryDirectory
from typing import Any, Literal

import torch

from hf_sparc.architectures import decoder_layers, get_architecture, unwrap_model
from hf_sparc.architectures.geometry import QUANTIZED_HINT, is_quantized
from hf_sparc.attribution.checkpoint import AccumulatorState, CheckpointStore, run_fingerprint
from hf_sparc.attribution.collector import Collector, data_free_scores
from hf_sparc.attribution.distributed import Shard, current_shard
from hf_sparc.attribution.memory import MemoryPlan, parse_bytes, plan_memory, process_bytes
from hf_sparc.attribution.objectives import get_objective
from hf_sparc.attribution.offload import check_loaded, execution_device
from hf_sparc.attribution.signals import get_method
from hf_sparc.attribution.streaming import AttributionRun, stream_batches
from hf_sparc.attribution.targets import resolve_targets
from hf_sparc.data.batching import Sample, TextsLike, tokenize
from hf_sparc.relevance import Relevance

Level = Literal["weight", "neuron", "head", "token"]
# methods whose scores read weight values (Wanda: |W|·‖X‖, magnitude: |W|)
_READS_WEIGHTS = ("magnitude", "wanda")


def attribute(
    model,
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
    max_memory: int | str | None = None,
    progress: bool = True,
) -> Relevance:
    """Relevance of ``model``'s components for explaining its outputs on ``texts``.

    Relevance of component k is the mean over reference samples of its per-sample relevance
    (paper Eq. 1); a sample's relevance sums over its tokens. LRP runs in Gradient×Input form:
    one forward and one backward per batch, with AttnLRP's rules applied to this model instance only.

    Args:
        model: A supported ``*ForCausalLM`` (Llama, Mistral, Qwen2/3, OPT, GPT-2, Gemma3) or a
            ``PeftModel`` around one. Its mode and ``requires_grad`` flags are restored afterwards.
        texts: ``list[str]``, dicts with ``prompt``/``continuation`` (only continuation tokens are
            explained) or with ``text_column``, or a ``datasets.Dataset``; task items
            ``prompt``/``correct``/``wrong`` for ``objective="logit_difference"``. Not needed for
            ``magnitude``/``random``.
        tokenizer: The model's tokenizer.
        method: A name in :data:`hf_sparc.attribution.METHODS`: ``"lrp"`` (AttnLRP), ``"cp-lrp"``,
            ``"gradient"``, ``"wanda"``, ``"magnitude"``, ``"activation"`` or ``"random"``.
        level: ``"weight"``, ``"neuron"``, ``"head"`` or ``"token"``.
        target_modules: Module names to score: a regex (``str``, full match) or a list of name
            suffixes, as in PEFT. ``None``: MLP up-projections (neuron), attention modules
            (head), every projection inside the decoder layers (weight).
        batch_size: Texts per forward/backward pass. Results do not depend on it.
        max_length: Texts are truncated to this many tokens (with a warning).
        objective: What is explained, a name in :data:`hf_sparc.attribution.OBJECTIVES`
            (:mod:`hf_sparc.attribution.objectives`): ``"next_token"`` (teacher forcing),
            ``"next_token_centered"``, ``"last_token_max"`` or ``"logit_difference"``.
        absolute: Sum ``|R|`` over token positions instead of signed ``R`` (the authors' earlier
            pruning work used ``|R|``). Signed (default) is the paper's Eq. 1 as written.
        text_column: Column holding plain text in dicts / datasets.
        seed: Seed of the ``random`` method (no global RNG is touched).
        gradient_checkpointing: Recompute each decoder layer's activations in the backward pass
            (less memory for about one more forward); results are unchanged.
        checkpoint_dir: Save the accumulators there every ``checkpoint_every`` batches (atomically);
            a later call with the same arguments resumes bit-identically. Runs with different
            settings, texts or process counts are refused, not mixed.
        checkpoint_every: Batches between two saves of ``checkpoint_dir``.
        distributed: ``None``: when launched as several processes (``accelerate launch``,
            ``torchrun``), each attributes its share of the batches and all get the summed result
            (every process must pass the same texts). ``False``: each process works alone.
        max_memory: Budget of the whole run, model included (bytes or ``"8GB"``): planned, logged or
            refused with ``MemoryError`` by :mod:`hf_sparc.attribution.memory`. ``None``: float64.
        progress: Show a tqdm bar (first process only; also silenced by transformers' setting).

    Returns:
        A :class:`~hf_sparc.Relevance` keyed by module name.
    """
    _check_positive("checkpoint_every", checkpoint_every)
    settings = dict(absolute=absolute, max_length=max_length, batch_size=batch_size, seed=seed)
    run = _plan(model, method, level, objective, target_modules, settings)
    if not run.method.needs_data:
        scores = data_free_scores(run.base, level, run.method.signal, run.targets, seed)
        return Relevance(scores, run.info(0, 0))
    samples = tokenize(run.objective.prepare(texts, tokenizer), tokenizer, max_length=max_length,
                       text_column=text_column, require_explained=run.explains_tokens)  # fmt: skip
    run, plan = _memory_plan(run, samples, batch_size, max_memory)
    pad_id, checkpointing = getattr(tokenizer, "pad_token_id", None) or 0, gradient_checkpointing
    options = dict(batch_size=batch_size, pad_id=pad_id, progress=progress,
                   gradient_checkpointing=checkpointing or plan.gradient_checkpointing)  # fmt: skip
    store = dict(directory=checkpoint_dir, every=checkpoint_every)
    return _run_groups(run, plan, samples, current_shard(distributed), absolute, store, options)


def _run_groups(run, plan: MemoryPlan, samples, shard: Shard, absolute: bool, store: dict, options: dict):
    """Stream the data once per target group of ``plan``; the groups' scores in the targets' order
    (with ``plan.spill``, each group's wait in a temporary folder until the last pass is over)."""
    scores, info = {}, None
    with TemporaryDirectory(prefix="hf_sparc-scores-") if plan.spill else nullcontext() as spilled:
        for number, group in enumerate(plan.groups):
            single = len(plan.groups) == 1
            part = run if single else dataclasses.replace(run, targets={n: run.targets[n] for n in group})
            directory = store["directory"]
            if directory is not None and not single:
                directory = f"{directory}/group-{number}"
            checkpoints, state = _resume(part, samples, options["pad_id"], shard, directory, store["every"])
            collector = Collector(part.base, part.spec, run.level, part.method.signal, part.targets, absolute,
                                  state.sums, dtype=plan.accumulator)  # fmt: skip
            stream_batches(part, samples, collector, state, shard=shard, store=checkpoints, **options)
            result = _result(part, state, shard, collector, samples)
            if single:
                return result
            info = info or result.info
            if spilled is None:
                scores.update(result)
            else:
                _save_scores(dict(result), f"{spilled}/group-{number}.pt")
            del result, collector, state
        if spilled is not None:
            for number in range(len(plan.groups)):
                scores.update(_load_scores(f"{spilled}/group-{number}.pt"))
    return Relevance({name: scores[name] for name in run.targets}, info)


def _save_scores(scores: dict[str, torch.Tensor], path: str) -> None:
    torch.save(scores, path)


def _load_scores(path: str) -> dict[str, torch.Tensor]:
    """Read into fresh memory, not mapped from the file: with safetensors' memory-mapped loads, a
    second budgeted call in the same process saw the first call's relevance (3.9 GB on the 1.1B
    shape) as held by the process and refused a budget it meets with plain reads."""
    return torch.load(path, weights_only=True, mmap=False)


def _memory_plan(run: AttributionRun, samples: list[Sample], batch_size: int, max_memory):
    """``(run, plan)``: the plan for ``max_memory``; float32 accumulators are recorded in the run's
    settings (and so in checkpoint fingerprints), float64 ones are not (results as before)."""
    budget = None if max_memory is None else parse_bytes(max_memory)
    longest = max((len(s.input_ids) for s in samples), default=1)
    layers = sum(1 for _ in decoder_layers(run.base, run.spec))
    targets = run.targets if run.level != "token" else {}
    held = 0 if budget is None else process_bytes(run.base, run.device)
    tokens, on_cpu = batch_size * longest, run.device.type == "cpu"  # scores are made in CPU memory
    plan = plan_memory(run.base, targets, run.level, tokens, layers, budget, held_by_process=held,
                       scores_in_budget=on_cpu)  # fmt: skip
    if plan.accumulator != torch.float64:
        run = dataclasses.replace(run, settings={**run.settings, "accumulator": "float32"})
    return run, plan


def _check_positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")


def _plan(model, method: str, level: str, objective: str, target_modules, settings: dict) -> AttributionRun:
    """Validate the call and decide what is scored, before any data is read; ``settings`` are
    recorded in the result with the objective and targets."""
    listed = target_modules if isinstance(target_modules, str | None) else list(target_modules)
    settings = {"objective": objective, **settings, "target_modules": listed}
    attribution = get_method(method, level)
    explained = get_objective(objective)
    base = unwrap_model(model)
    spec = get_architecture(base)
    check_loaded(base)
    targets = resolve_targets(base, spec, level, target_modules)
    quantized = [name for name, module in targets.items() if level != "head" and is_quantized(module)]
    if quantized and (level == "weight" or method in _READS_WEIGHTS):
        raise ValueError(
            f"{quantized[0]} is quantized: {method} at {level} level reads its weights, which are packed "
            f"codes; {QUANTIZED_HINT} (neuron-level LRP, gradient and activation work on quantized models)."
        )
    return AttributionRun(
        model=model,
        base=base,
        spec=spec,
        method=attribution,
        level=level,
        objective=explained,
        targets=targets,
        device=execution_device(base.get_input_embeddings()),
        settings=settings,
    )


def _resume(
    run: AttributionRun, samples: list[Sample], pad_id: int, shard: Shard, directory, every: int
) -> tuple[CheckpointStore | None, AccumulatorState]:
    """The checkpoint store of this run (``None`` without ``directory``) and the state to go on from."""
    if directory is None:
        return None, AccumulatorState()
    description: dict[str, Any] = {
        "method": run.method.name,
        "level": run.level,
        "settings": run.settings,
        "targets": list(run.targets),
        "pad_id": pad_id,
        "model": run.model_name,
        "parameters": sum(p.numel() for p in run.base.parameters()),
        "shard": [shard.rank, shard.world_size],
    }
    objective_data = run.objective.run_data()
    if objective_data is not None:  # only then: fingerprints of the other objectives stay as they were
        description["objective_data"] = objective_data
    store = CheckpointStore(directory, run_fingerprint(samples, description), shard, every)
    return store, store.load() or AccumulatorState()


def _result(
    run: AttributionRun, state: AccumulatorState, shard: Shard, collector: Collector, samples: list[Sample]
) -> Relevance:
    """Combine this process's accumulators with the other processes' into the Relevance."""
    shard.all_reduce(collector.complete_sums(run.device) if run.level != "token" else {})
    n_real = sum(shard.all_gather(state.n_real))
    outputs, tokens = {}, {}
    for part_outputs, part_tokens in shard.all_gather((state.outputs, state.tokens)):
        outputs.update(part_outputs)
        tokens.update(part_tokens)
    ordered_outputs = [value for index in sorted(outputs) for value in outputs[index]]
    n_tokens = sum(s.n_explained for s in samples) if run.objective.per_token else len(samples)
    if run.level != "token":
        scores = collector.scores(len(samples), n_real)
        return Relevance(scores, run.info(len(samples), n_tokens, outputs=ordered_outputs))
    absolute = run.settings["absolute"]
    scores = torch.cat([t.abs() if absolute else t for index in sorted(tokens) for t in tokens[index]])
    embeddings = run.base.get_input_embeddings()
    name = next(n for n, m in run.base.named_modules() if m is embeddings)
    token_info = {"token_counts": [len(s.input_ids) for s in samples],
                  "token_ids": [list(s.input_ids) for s in samples]}  # fmt: skip
    return Relevance({name: scores}, run.info(len(samples), n_tokens, outputs=ordered_outputs, **token_info))
