"""The model card (``README.md``) of a SPARC adapter: what was pruned, how it was chosen, how to load it."""

from __future__ import annotations

import os
import re
from importlib import metadata
from typing import TYPE_CHECKING

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from hf_sparc.masks import MaskSummary, ModuleSummary
from hf_sparc.tuner.layer import sparc_layers

if TYPE_CHECKING:
    from peft import PeftModel

_LEVEL_WORDS = {"neuron": "neurons", "head": "attention heads", "weight": "weights"}
_CITATION = """@article{hatefi2025sparc3,
  title   = {Attribution-guided Pruning for Compression, Circuit Discovery, and Targeted Correction in LLMs},
  author  = {Hatefi, Sayed Mohammad Vakilzadeh and others},
  journal = {arXiv preprint arXiv:2506.13727},
  year    = {2025}
}"""


def _version() -> str:
    try:
        return metadata.version("hf-sparc")
    except metadata.PackageNotFoundError:
        return "unknown"


def _method_words(method: str) -> str:
    """``"(lrp) - (lrp)"`` (a contrastive difference) in words; other names as they are."""
    match = re.fullmatch(r"\((.+)\) - \((.+)\)", method or "")
    if match and match[1] == match[2]:
        return f"{match[1]}, contrastive: general minus undesired relevance (paper Eq. 7)"
    return method or "unknown"


def model_card(
    peft_model: PeftModel,
    *,
    adapter_name: str | None = None,
    repo_id: str | None = None,
    metrics: dict[str, float] | None = None,
    reference_data: str | None = None,
    ia3_copy: bool = False,
    metrics_before: dict[str, float] | None = None,
    license: str | None = None,
    datasets: list[str] | None = None,
) -> ModelCard:
    """Model card (``README.md``) for one SPARC adapter.

    Front matter: ``library_name: peft``, ``base_model``, ``tags: [hf_sparc, ...]``, ``license``
    and ``datasets`` when given, and ``model-index`` evaluation results when ``metrics`` and
    ``datasets`` are. Body: what was pruned (level, total and per-module counts), how it was chosen
    (attribution method, selection rule, reference data), metrics before and after, how to load it
    (with and without hf_sparc), the hf_sparc version and the citation.

    Args:
        peft_model: A ``PeftModel`` holding the adapter.
        adapter_name: Which adapter; default: the active one.
        repo_id: Repository the card is for (used in the loading snippet).
        metrics: Evaluation results to report, e.g. ``{"toxicity": 0.12, "perplexity": 21.3}``.
        reference_data: Description of the reference texts; default: the attribution settings'
            ``reference_data``/``dataset`` entry when there is one.
        ia3_copy: The adapter folder also holds a plain-PEFT (IA)³ copy in ``ia3/``.
        metrics_before: The same metrics for the unpruned model (a before/after table).
        license: SPDX id or ``"other"`` for the front matter (the base model's license applies to
            its weights; an adapter of indices adds no terms of its own).
        datasets: Hub ids of the reference / evaluation data; the first names the evaluation
            results of ``metrics``.
    """
    name = adapter_name or peft_model.active_adapters[0]
    config = peft_model.peft_config[name]
    provenance = config.provenance
    settings = provenance.get("settings", {})
    reference = reference_data or settings.get("reference_data") or settings.get("dataset")
    base_model = config.base_model_name_or_path or peft_model.get_base_model().name_or_path or None
    summary = _summary(peft_model, name)
    level = _LEVEL_WORDS[config.level]

    data = _front_matter(config, base_model, repo_id, metrics, license, datasets)
    load_id = repo_id or "<this repository>"
    lines = [
        f"# SPARC pruning adapter{f' for {base_model}' if base_model else ''}",
        "",
        f"This adapter {'dampens' if config.soft else 'prunes'} **{summary.pruned} {level}** "
        f"({100 * summary.fraction:.3g}% of those in the {len(summary.rows)} masked modules) of "
        f"`{base_model or 'the base model'}` ({config.model_type}). It stores only the indices of those "
        + (
            "units and the scale each keeps; their outputs are multiplied by it when the adapter is "
            "applied or merged."
            if config.soft
            else "units; the base model's weights are zeroed there when the adapter is applied or merged."
        ),
        "",
        "## How the pruned units were chosen",
        "",
        f"- Attribution method: {_method_words(provenance.get('method', ''))}",
        f"- Selection rule: `{provenance.get('rule') or 'unknown'}`",
        f"- Reference samples: {provenance.get('n_samples') or 'unknown'}",
        f"- Reference data: {reference or 'not recorded'}",
        "",
        "## Pruned units per module",
        "",
        summary.to_markdown(),
        "",
        *_metrics_lines(metrics, metrics_before),
        *_usage_lines(load_id, ia3_copy),
    ]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines))


def _front_matter(config, base_model, repo_id, metrics, license, datasets) -> ModelCardData:
    """The card's YAML: library, base model, tags, license, datasets and ``model-index`` results
    (one per metric, on the first dataset, when both are given)."""
    evals = [
        EvalResult(
            task_type="text-generation",
            dataset_type=datasets[0],
            dataset_name=datasets[0],
            metric_type=metric,
            metric_value=float(value),
        )
        for metric, value in (metrics or {}).items()
        if datasets
    ]
    return ModelCardData(
        library_name="peft",
        # the Hub only accepts repo ids here; a local path is still named in the text
        base_model=None if base_model and os.path.isdir(base_model) else base_model,
        tags=["hf_sparc", "sparc", "pruning", "lrp", f"{config.level}-pruning"],
        pipeline_tag="text-generation",
        license=license,
        datasets=datasets,
        model_name=(repo_id or f"{base_model or 'model'} SPARC adapter") if evals else None,
        eval_results=evals or None,
    )


def _metrics_lines(metrics: dict[str, float] | None, before: dict[str, float] | None) -> list[str]:
    if not metrics:
        return []
    before = before or {}
    lines = ["## Metrics", "", "| metric | before | after |", "| --- | ---: | ---: |"]
    for metric, value in metrics.items():
        old = f"{before[metric]:.4g}" if metric in before else ""
        lines.append(f"| {metric} | {old} | {value:.4g} |")
    return [*lines, ""]


def _usage_lines(load_id: str, ia3_copy: bool) -> list[str]:
    without = (
        f'load the plain-PEFT (IA)³ copy in `ia3/`: `PeftModel.from_pretrained(base, "{load_id}", '
        'subfolder="ia3")`.'
        if ia3_copy
        else "merge first (`hf_sparc.export_merged`) or, for neuron/head masks, export a standard "
        "(IA)³ adapter (`hf_sparc.export_ia3`)."
    )
    return [
        "## Usage",
        "",
        "```python",
        "# pip install hf-sparc",
        "import hf_sparc  # registers the SPARC adapter type with PEFT",
        "from transformers import AutoModelForCausalLM",
        f'model = AutoModelForCausalLM.from_pretrained("{load_id}")',
        "```",
        "",
        "Without `import hf_sparc`, PEFT does not know the `SPARC` adapter type and fails with "
        f"`KeyError: 'SPARC'`: install and import hf_sparc as above, or {without}",
        "",
        f"Made with [hf_sparc](https://pypi.org/project/hf-sparc/) {_version()}, an implementation of",
        "attribution-guided pruning (SparC³):",
        "",
        "```bibtex",
        _CITATION,
        "```",
        "",
    ]


def _summary(peft_model: PeftModel, adapter_name: str) -> MaskSummary:
    """Per masked module: pruned count and how many units it has, keyed like the masks were."""
    config = peft_model.peft_config[adapter_name]
    rows = [
        ModuleSummary(
            config.mask_modules.get(name, name), config.module_counts[name], layer.n_components(adapter_name)
        )
        for name, layer in sparc_layers(peft_model.get_base_model())
        if adapter_name in layer.pruning_indices
    ]
    return MaskSummary(config.level, tuple(rows))
