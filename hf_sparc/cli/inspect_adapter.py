"""``hf-sparc inspect``: what a SPARC adapter cuts, and what the cut units respond to.

For any SPARC adapter folder (correction, circuit, compression): the pruned units per module and
per layer (``layers.png``) and, for neurons and heads, the reference contexts where each unit
activates most, as ``inspect.md`` and ``units.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hf_sparc.cli._common import (
    SPEC_HELP,
    Formatter,
    Output,
    add_model_options,
    add_output_options,
    load_model,
    loading_options,
)
from hf_sparc_cli import COMMAND_HELP


def _run(args: argparse.Namespace) -> None:
    from peft import PeftModel

    from hf_sparc.data.sources import load_texts, plain_texts
    from hf_sparc.tuner.adapter_masks import adapter_masks
    from hf_sparc.workflows import insight

    config_file = Path(args.adapter, "adapter_config.json")
    if not config_file.is_file():
        raise FileNotFoundError(f"{args.adapter} holds no adapter_config.json.")
    config = json.loads(config_file.read_text())
    if config.get("peft_type") != "SPARC":
        raise ValueError(f"{args.adapter} is a {config.get('peft_type')} adapter, not a SPARC one.")
    base_name = args.model or config.get("base_model_name_or_path")
    if not base_name:
        raise ValueError("The adapter does not name its base model; pass --model.")
    if args.top_k < 1 or args.n_texts < 1:
        raise ValueError("--top-k and --n-texts must be positive.")
    with Output(args.output, args.overwrite) as output:
        model, tokenizer = load_model(base_name, **loading_options(args))
        peft_model = PeftModel.from_pretrained(model, args.adapter).eval()
        masks = adapter_masks(peft_model)
        texts = []  # weight masks have no per-unit activations: no texts to read
        if masks.level in ("neuron", "head"):
            texts = plain_texts(load_texts(args.texts, seed=args.seed))[: args.n_texts]
        units, listing = insight.save_unit_report(
            peft_model,
            tokenizer,
            masks,
            texts,
            output.work,
            top_k=args.top_k,
            context_tokens=args.context_tokens,
            batch_size=args.batch_size,
            max_length=args.max_length,
        )
        heading = f"# hf_sparc inspect: {args.adapter}\n\nBase model `{base_name}`; "
        heading += (
            f"top contexts on `{args.texts}` ({args.n_texts} texts max), "
            "the top token in bold after its context."
            if units
            else "weight-level masks have no per-unit activations."
        )
        text = f"{heading}\n\n![](layers.png)\n\n{listing}"
        (output.work / "inspect.md").write_text(text)
    print(text)


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "inspect",
        help=COMMAND_HELP["inspect"],
        description=__doc__,
        formatter_class=Formatter,
        epilog=SPEC_HELP,
    )
    parser.add_argument("adapter", help="SPARC adapter folder")
    add_model_options(parser, required=False)
    parser.add_argument("--texts", default="general", help="SPEC of reference texts to read activations on")
    parser.add_argument("--n-texts", type=int, default=64, help="reference texts used")
    parser.add_argument("--top-k", type=int, default=5, help="contexts per unit")
    parser.add_argument(
        "--context-tokens", type=int, default=8, help="tokens of context before the top token"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the built-in data splits")
    add_output_options(parser, "folder for inspect.md, units.json and layers.png")
    parser.set_defaults(run=_run)
