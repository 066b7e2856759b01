"""Save a SPARC mask adapter, optionally push it to the Hub, and prove that it loads back.

Workflow:

1. The pruned model, in memory, from one of two sources:
   - ``--run-dir DIR``: a folder written by ``hf-sparc correct`` (or ``hf-sparc select``); its
     adapter is applied to its base model (``adapter_config.json`` names it; ``--model``
     overrides) and its ``report.json`` metrics go into the model card;
   - otherwise a quick data-free cut: ``hf_sparc.attribute(model, method="magnitude" | "random",
     level=...)`` + ``hf_sparc.select(count=...)`` + ``hf_sparc.apply_masks``.
2. ``hf_sparc.save_adapter(peft_model, --output)``: ``adapter_config.json``,
   ``adapter_model.safetensors`` (only the pruned indices: a few KB) and a model card
   (``README.md``), without the relevance files and reports of a run folder.
3. With ``--repo-id user/name``: ``hf_sparc.push_to_hub`` uploads the same three files in one
   commit (the repository is created if needed) and the adapter is loaded back from the Hub.
   This needs network access and a write token: ``huggingface-cli login``, the ``HF_TOKEN``
   environment variable, or ``--token``. For a self-hosted or mirror Hub set ``HF_ENDPOINT``
   (e.g. ``HF_ENDPOINT=https://hub.example.org``) in the environment before starting Python.
   Without ``--repo-id`` nothing leaves the machine.
4. Always: load the saved folder back in a fresh model, both with
   ``AutoModelForCausalLM.from_pretrained(output)`` (transformers finds ``adapter_config.json``,
   loads the base model it names, and applies the adapter; ``import hf_sparc`` registers the
   adapter type with PEFT) and with ``PeftModel.from_pretrained(base, output)``, and check that
   the logits equal the in-memory pruned model's (up to float32 rounding, 1e-5).

The adapter records its base model as the folder it was loaded from (``base_model_name_or_path``).
The built-in SmolLM2 is de-quantised from a GGUF, so it is *not* the Hub's
HuggingFaceTB/SmolLM2-135M-Instruct: people who load the adapter from the Hub load that same base
themselves and call ``PeftModel.from_pretrained(base, repo_id)``.

    python examples/publish_adapter.py                                   # magnitude cut, local only
    hf-sparc correct --model smollm2-135m-instruct --undesired toxic.jsonl --general general \\
        --output runs/detox && python examples/publish_adapter.py --run-dir runs/detox \\
        --repo-id me/smollm2-detox
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from _common import check_output, load_model, make_parser, same_logits
from peft import PeftModel
from transformers import AutoModelForCausalLM

import hf_sparc
from hf_sparc.data import DEFAULT_MODEL

PROBES = [
    "The quick brown fox jumps over the lazy dog.",
    "Pruning removes the components that drive a behaviour, and nothing else.",
]


def from_run_dir(run_dir: Path, model_name: str | None, device: str):
    """``(peft_model, tokenizer, base_path, metrics)`` from an ``hf-sparc correct`` output folder."""
    config_file = run_dir / "adapter_config.json"
    if not config_file.is_file():
        raise SystemExit(
            f"{run_dir} holds no adapter_config.json; run `hf-sparc correct --output {run_dir}` first."
        )
    base = model_name or json.loads(config_file.read_text()).get("base_model_name_or_path")
    if not base:
        raise SystemExit(f"{config_file} does not name its base model; pass --model.")
    model, tokenizer, path = load_model(base, device)
    peft_model = PeftModel.from_pretrained(model, run_dir).eval()
    report = run_dir / "report.json"
    metrics = json.loads(report.read_text()).get("metrics_after") if report.is_file() else None
    return peft_model, tokenizer, path, metrics


def quick_cut(args):
    """``(peft_model, tokenizer, base_path, None)``: a data-free magnitude or random cut."""
    model, tokenizer, path = load_model(args.model, args.device)
    relevance = hf_sparc.attribute(model, method=args.method, level=args.level, seed=args.seed)
    masks = hf_sparc.select(relevance, count=args.count, keep="highest")  # cut the lowest scores
    return hf_sparc.apply_masks(model, masks, adapter_name="sparc"), tokenizer, path, None


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = make_parser(__doc__, prog="publish_adapter.py", model_default=None)
    parser.add_argument("--run-dir", default=None, help="folder written by `hf-sparc correct` to publish")
    parser.add_argument(
        "--method", default="magnitude", choices=["magnitude", "random"], help="quick cut (without --run-dir)"
    )
    parser.add_argument(
        "--level", default="neuron", choices=["neuron", "head", "weight"], help="quick cut: what to prune"
    )
    parser.add_argument("--count", type=int, default=100, help="quick cut: components to prune")
    parser.add_argument("--seed", type=int, default=0, help="quick cut: seed of --method random")
    parser.add_argument("--output", default="runs/published-adapter", help="adapter folder to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an adapter already in --output")
    parser.add_argument("--repo-id", default=None, help="Hub repository to push to, e.g. user/smollm2-detox")
    parser.add_argument("--token", default=None, help="Hub token (default: HF_TOKEN or the saved login)")
    parser.add_argument("--private", action="store_true", help="create the Hub repository as private")
    args = parser.parse_args(argv)
    if args.model is None and args.run_dir is None:
        args.model = DEFAULT_MODEL
    output = check_output(parser, args.output, args.overwrite)

    if args.run_dir:
        peft_model, tokenizer, base_path, metrics = from_run_dir(Path(args.run_dir), args.model, args.device)
    else:
        peft_model, tokenizer, base_path, metrics = quick_cut(args)
    name = peft_model.active_adapters[0]
    config = peft_model.peft_config[name]
    pruned = sum(config.module_counts.values())
    print(f"base model: {base_path}\nadapter {name!r}: {pruned} pruned {config.level}s")

    hf_sparc.save_adapter(peft_model, output, overwrite=args.overwrite, repo_id=args.repo_id, metrics=metrics)
    files = sorted(p.name for p in output.iterdir())
    size = sum(p.stat().st_size for p in output.iterdir())
    print(f"saved to {output}: {', '.join(files)} ({size / 1024:.1f} KB)")

    url = None
    if args.repo_id:
        url = hf_sparc.push_to_hub(
            peft_model, args.repo_id, token=args.token, private=args.private or None, metrics=metrics
        )
        print(f"pushed to {args.repo_id}: {url}")

    # Load back in fresh models (one at a time) and compare with the in-memory pruned model, bit for bit.
    def base_model():
        return AutoModelForCausalLM.from_pretrained(base_path)

    loaders = {
        "AutoModelForCausalLM.from_pretrained(output)": lambda: AutoModelForCausalLM.from_pretrained(output),
        "PeftModel.from_pretrained(base, output)": lambda: PeftModel.from_pretrained(base_model(), output),
    }
    if args.repo_id:
        loaders[f"PeftModel.from_pretrained(base, {args.repo_id!r})"] = lambda: PeftModel.from_pretrained(
            base_model(), args.repo_id, token=args.token
        )
    identical = {}
    for label, load in loaders.items():
        identical[label] = same_logits(peft_model, load().to(args.device).eval(), tokenizer, PROBES)
        print(f"{label}: logits equal to the pruned model's: {identical[label]}")
    # ... and the comparison means something: the cut changes the base model's logits.
    differs = not same_logits(peft_model, base_model().to(args.device).eval(), tokenizer, PROBES)
    print(f"the pruned model's logits differ from the unpruned base model's: {differs}")
    if not all(identical.values()):
        raise SystemExit("a reloaded adapter does not reproduce the pruned model")
    return {
        "base_model": str(base_path),
        "adapter": str(output),
        "level": config.level,
        "pruned": pruned,
        "files": files,
        "url": url,
        "identical": identical,
        "differs_from_base": differs,
    }


if __name__ == "__main__":
    main()
