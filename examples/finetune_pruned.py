"""Prune with ``SparcPruner``, fine-tune with ``transformers.Trainer``, keep the cut exactly zero.

Workflow:

1. Load the model (default: the built-in SmolLM2-135M-Instruct, prepared offline).
2. ``SparcPruner(SparcConfig(method="lrp", level=..., count=...)).fit(model, tok, general=...)``:
   LRP relevance on --general built-in BoolQ passages, and selection of the --count least
   relevant MLP neurons (or attention heads) — compression, paper Eq. 2.
3. ``pruner.prune(model)`` gives a ``PeftModel`` with the mask adapter; ``merge_and_unload()``
   turns it into a plain ``transformers`` model whose pruned rows are zero.
4. Fine-tune it for --steps optimizer steps on other general passages with
   ``Trainer(..., callbacks=[pruner])``: the pruner zeroes the pruned weights at the start and
   again after every optimizer step, so training cannot revive a cut unit. With --lora, a LoRA
   adapter (peft) is trained on top of the merged pruned model instead; the pruner then also
   zeroes the LoRA rows/columns that would write into a pruned unit.
5. Check that every pruned weight (LoRA merged in) is still exactly 0.0 while training changed
   the others, and print perplexity on held-out general text: base, pruned, fine-tuned.

    python examples/finetune_pruned.py                     # full fine-tuning, 20 steps
    python examples/finetune_pruned.py --lora --steps 50   # LoRA on the pruned model
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch
from _common import load_model, make_parser
from peft import LoraConfig, get_peft_model
from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments
from transformers.pytorch_utils import Conv1D

import hf_sparc
from hf_sparc import SparcConfig, SparcPruner
from hf_sparc.architectures import attention_output_name, get_architecture, layer_part_names
from hf_sparc.data import builtin_dataset

DEFAULT_COUNTS = {"neuron": 768, "head": 27}
LORA_PARTS = ("query", "value", "fused_qkv", "attention_output", "mlp_up")


def pruned_weights(model: torch.nn.Module, masks: hf_sparc.Masks) -> torch.Tensor:
    """Every weight (and bias) entry of a plain model that ``masks`` prune, flattened.

    Written out here rather than taken from the pruner, as an independent check: a pruned neuron
    is an output row (+ its bias), a pruned head the input columns of its attention output projection.
    """
    spec = get_architecture(model)
    values = []
    for name, index in masks.items():
        module = model.get_submodule(attention_output_name(spec, name) if masks.level == "head" else name)
        weight = module.weight.T if isinstance(module, Conv1D) else module.weight  # [out, in]
        if masks.level == "head":
            head_dim = weight.shape[1] // masks.shapes[name][0]
            columns = (index[:, None] * head_dim + torch.arange(head_dim)).flatten()
            values.append(weight[:, columns].flatten())
        else:
            values.append(weight[index].flatten())
            if module.bias is not None:
                values.append(module.bias[index])
    return torch.cat(values).detach()


def tokenized(tokenizer, texts: list[str], max_length: int) -> list[dict[str, list[int]]]:
    return [
        {"input_ids": tokenizer(text, truncation=True, max_length=max_length)["input_ids"]} for text in texts
    ]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = make_parser(__doc__, prog="finetune_pruned.py")
    parser.add_argument("--level", default="neuron", choices=["neuron", "head"], help="what to prune")
    parser.add_argument(
        "--count",
        type=int,
        default=None,
        help="components to prune; default: 768 neurons or 27 heads (1.7%% / 10%% of SmolLM2's)",
    )
    parser.add_argument("--general", type=int, default=32, help="general reference texts attributed")
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps of fine-tuning")
    parser.add_argument("--train-texts", type=int, default=256, help="general texts to fine-tune on")
    parser.add_argument("--eval-texts", type=int, default=32, help="held-out general texts for perplexity")
    parser.add_argument("--lora", action="store_true", help="train a LoRA adapter instead of all weights")
    parser.add_argument("--lora-rank", type=int, default=8, help="LoRA rank (with --lora)")
    parser.add_argument("--learning-rate", type=float, default=1e-4, help="peak learning rate")
    parser.add_argument("--batch-size", type=int, default=4, help="texts per step (and per attribution pass)")
    parser.add_argument("--max-length", type=int, default=64, help="tokens per text")
    parser.add_argument("--output", default=None, help="save the fine-tuned model here (default: not saved)")
    args = parser.parse_args(argv)

    model, tokenizer, path = load_model(args.model, args.device)
    if tokenizer.pad_token is None:  # the collator pads; EOS serves (padding is masked out of the loss)
        tokenizer.pad_token = tokenizer.eos_token
    general = builtin_dataset("general", "reference")
    reference, train_texts = general[: args.general], general[args.general : args.general + args.train_texts]
    eval_texts = builtin_dataset("general", "dev")[: args.eval_texts]

    def perplexity(m) -> float:
        return hf_sparc.metrics.perplexity(
            m, tokenizer, eval_texts, max_length=args.max_length, batch_size=args.batch_size, progress=False
        )

    # 1. Prune: fit relevance on general text, cut the least relevant components.
    ppl = {"base": perplexity(model)}
    config = SparcConfig(
        method="lrp",
        level=args.level,
        count=args.count or DEFAULT_COUNTS[args.level],
        max_length=args.max_length,
        batch_size=args.batch_size,
    )
    pruner = SparcPruner(config).fit(model, tokenizer, general=reference)
    print(f"model: {path}\npruned {pruner.masks.total()} {args.level}s:\n{pruner.masks.summary()}")
    peft_model = pruner.prune(model)
    ppl["pruned"] = perplexity(peft_model)

    # 2. Fine-tune the merged pruned model (all weights, or a LoRA adapter on top of it).
    merged = peft_model.merge_and_unload()
    if torch.count_nonzero(pruned_weights(merged, pruner.masks)):
        raise SystemExit("merging the mask adapter did not zero the pruned weights")
    watched = {name: p.detach().clone() for name, p in merged.named_parameters()}
    trained = merged
    if args.lora:
        spec = get_architecture(merged)
        targets = list(dict.fromkeys(n for part in LORA_PARTS for n in layer_part_names(merged, spec, part)))
        lora = LoraConfig(r=args.lora_rank, lora_alpha=2 * args.lora_rank, target_modules=targets)
        trained = get_peft_model(merged, lora)
        trained.print_trainable_parameters()

    with tempfile.TemporaryDirectory() as scratch:
        training = TrainingArguments(
            output_dir=scratch,
            max_steps=args.steps,
            per_device_train_batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            lr_scheduler_type="constant",
            logging_steps=max(1, args.steps // 5),
            save_strategy="no",
            report_to="none",
            use_cpu=args.device == "cpu",
            seed=0,
        )
        trainer = Trainer(
            model=trained,
            args=training,
            train_dataset=tokenized(tokenizer, train_texts, args.max_length),
            data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
            callbacks=[pruner],  # zeroes the pruned weights after every optimizer step
        )
        train_loss = trainer.train().training_loss
    trained.eval()
    ppl["fine-tuned"] = perplexity(trained)

    # 3. Verify on the effective weights (LoRA merged in): pruned ones exactly zero, others trained.
    final = trained.merge_and_unload() if args.lora else trained
    values = pruned_weights(final, pruner.masks)
    all_zero = bool((values == 0).all())
    changed = sum(int((p.detach() != watched[n]).sum()) for n, p in final.named_parameters() if n in watched)
    print(f"\nperplexity on {len(eval_texts)} held-out texts (lower is better):")
    for name, value in ppl.items():
        print(f"  {name:<10} {value:.4f}")
    print(
        f"after {trainer.state.global_step} {'LoRA' if args.lora else 'full'} fine-tuning steps: "
        f"{changed} weights changed; the {values.numel()} pruned weight entries are all exactly 0.0: "
        f"{all_zero} (max |w| = {values.abs().max().item():.3g})"
    )
    if args.output:
        final.save_pretrained(args.output)
        tokenizer.save_pretrained(args.output)
        print(f"fine-tuned pruned model saved to {Path(args.output)}")
    if not all_zero:
        raise SystemExit("a pruned weight came back to life during fine-tuning")
    return {
        "model": str(path),
        "level": args.level,
        "pruned": pruner.masks.total(),
        "steps": trainer.state.global_step,
        "train_loss": train_loss,
        "perplexity": ppl,
        "pruned_entries": values.numel(),
        "pruned_all_zero": all_zero,
        "changed_weights": changed,
        "model_out": final,
        "masks": pruner.masks,
    }


if __name__ == "__main__":
    main()
