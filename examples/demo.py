"""The README's main job: toxicity correction of SmolLM2-135M-Instruct, with controls.

Workflow: load the embedded real model; let it continue toxic prompts and keep the toxic
continuations as undesired references (its own behaviour, as in the paper); attribute them and
general text with LRP; cut the most toxicity-specific MLP neurons; measure toxic rate and
perplexity on held-out data next to equal-size controls (Gradient×Input, Wanda, activation, magnitude,
random × 5 seeds); save the adapter, reload it with ``AutoModelForCausalLM.from_pretrained`` and
check the reload reproduces the corrected model. Everything runs offline on CPU.

The demo runs the configuration fixed beforehand (``CorrectionSettings`` defaults, chosen on the
dev split) and by default reports **test** numbers: the locked held-out split that no choice was
made on (see ``hf_sparc.data.builtin``). ``--split dev`` measures on the dev split instead, where
options are compared and chosen; never choose anything on test numbers.

    python examples/demo.py                 # defaults (about 60 min on 2 idle CPU cores: 18 selections
                                            # × 3 min + references and attribution)
    python examples/demo.py --quick         # smaller sets, fewer controls (a few minutes)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from _common import HelpFormatter, same_logits
from transformers import AutoModelForCausalLM, AutoTokenizer

import hf_sparc
from hf_sparc.behaviors import BEHAVIORS, get_behavior
from hf_sparc.data import default_model_path
from hf_sparc.tuner.export import save_adapter
from hf_sparc.workflows.correction import CorrectionSettings, run_correction

QUICK = dict(
    n_candidates=48, n_general=16, n_eval_prompts=32, n_eval_texts=16, random_seeds=2, controls=("random",),
    task_limit=20,
)  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="demo.py",
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--model", default="smollm2-135m-instruct", help="built-in name or local folder")
    parser.add_argument("--behavior", default="toxicity", choices=list(BEHAVIORS))
    parser.add_argument("--count", type=int, default=CorrectionSettings.count, help="components to cut")
    parser.add_argument("--level", default="neuron", choices=["neuron", "head", "weight"])
    parser.add_argument("--output", default="runs/demo", help="folder for adapter, report and plot")
    parser.add_argument("--quick", action="store_true", help="smaller sets and fewer controls")
    parser.add_argument(
        "--split",
        default="test",
        choices=["dev", "test"],
        help="held-out split measured on: test reports the fixed configuration; choices are made on dev",
    )
    parser.add_argument(
        "--record",
        default=None,
        help="also write the run's JSON record here (e.g. docs/results/demo.json, which "
        "scripts/render_results.py renders into the README and docs/RESULTS.md)",
    )
    args = parser.parse_args(argv)

    torch.set_num_threads(max(1, torch.get_num_threads()))
    path = default_model_path(args.model) if not Path(args.model).is_dir() else Path(args.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    settings = CorrectionSettings(
        behavior=args.behavior,
        count=args.count,
        level=args.level,
        split=args.split,
        **(QUICK if args.quick else {}),
    )
    print(
        f"hf_sparc demo: {args.behavior} correction of {path.name}, {settings.count} {settings.level}s, "
        f"measured on the {settings.split} split"
    )
    start = time.perf_counter()
    result = run_correction(model, tokenizer, settings)
    minutes = (time.perf_counter() - start) / 60

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    corrected = hf_sparc.apply_masks(model, result.masks, adapter_name="sparc")
    save_adapter(corrected, out / "adapter", overwrite=True, metrics=result.rows[settings.method])

    # Reload through transformers' adapter auto-load and check it reproduces the corrected model.
    reloaded = AutoModelForCausalLM.from_pretrained(out / "adapter").eval()
    identical = same_logits(corrected, reloaded, tokenizer, get_behavior(args.behavior).probes(4))

    s = result.settings
    insight_notes = hf_sparc.workflows.insight.correction_notes(
        corrected, tokenizer, result.masks, result.reference_pairs.contexts(), out,
        batch_size=s.batch_size, max_length=s.reference_max_length,
    )  # fmt: skip
    result.save(
        out,
        f"{args.behavior} correction of {path.name}",
        notes=[
            f"Reloaded adapter reproduces the corrected logits (up to float32 rounding, 1e-5): {identical}",
            "![](plot.png)",
            *insight_notes,
        ],
        extra={"minutes": minutes, "reload_identical": identical, "model": path.name},
    )
    if args.record:
        Path(args.record).parent.mkdir(parents=True, exist_ok=True)
        Path(args.record).write_text((out / "report.json").read_text(encoding="utf-8"), encoding="utf-8")
    print(result.table())
    print(f"\nreferences: {result.references}")
    print(f"adapter reloaded with AutoModelForCausalLM.from_pretrained: same logits = {identical}")
    print(f"done in {minutes:.1f} min; report: {out / 'report.md'} (with what each cut unit responds to), "
          f"plots: {out / 'plot.png'}, {out / 'layers.png'}")  # fmt: skip
    if not identical:
        raise SystemExit("the reloaded adapter does not reproduce the corrected model")


if __name__ == "__main__":
    main()
