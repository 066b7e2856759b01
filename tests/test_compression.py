"""hf_sparc.workflows.compression: exactly ⌊s·n⌋ weights per scope, lowest scores first, side by side."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import TEXTS, make_model

from hf_sparc.workflows.compression import (
    compare_compression,
    compression_masks,
    masks_at_sparsity,
    prune_count,
    weight_relevance,
)


def test_prune_count_reads_the_decimal():
    assert prune_count(100, 0.29) == 29
    assert prune_count(7, 0.5) == 3
    for bad in (0, 1, 1.5, -0.1, True):
        with pytest.raises(ValueError, match="sparsity"):
            prune_count(10, bad)


@pytest.mark.parametrize("method", ["lrp", "lrp-l2", "lrp-wanda", "wanda", "magnitude"])
@pytest.mark.parametrize("sparsity", [0.5, 0.3, 0.29])
def test_global_prunes_floor_s_n_lowest_first(tokenizer, method, sparsity):
    model = make_model("llama")
    rel = weight_relevance(model, tokenizer, TEXTS, method, progress=False)
    masks = masks_at_sparsity(rel, sparsity, "global")
    # ⌊s·n⌋ in exact integer arithmetic (every sparsity here has at most 3 decimals)
    assert masks.total() == round(sparsity * 1000) * rel.numel() // 1000
    chosen = {n: torch.zeros(rel[n].numel(), dtype=torch.bool).index_fill_(0, masks[n], True) for n in masks}
    pruned = torch.cat([rel[n].flatten()[chosen[n]] for n in masks])
    kept = torch.cat([rel[n].flatten()[~chosen[n]] if n in chosen else rel[n].flatten() for n in rel])
    assert pruned.max() <= kept.min()


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize("sparsity", [0.5, 0.3])
def test_row_prunes_floor_s_width_in_every_row(tokenizer, arch, sparsity):
    model = make_model(arch)
    masks = compression_masks(
        model, tokenizer, TEXTS, sparsity=sparsity, method="wanda", scope="row", progress=False
    )
    transposed = arch == "gpt2"  # Conv1D weights are [in, out]: an output row is a column
    for name, shape in masks.shapes.items():
        grid = torch.zeros(math.prod(shape), dtype=torch.bool)
        grid[masks.indices.get(name, torch.empty(0, dtype=torch.long))] = True
        grid = grid.view(shape)
        rows = grid.t() if transposed else grid
        expected = prune_count(rows.shape[1], sparsity)
        assert rows.sum(1).tolist() == [expected] * rows.shape[0], name


def test_compare_leaves_the_model_unchanged(tokenizer):
    model = make_model("llama")
    ids = tokenizer(TEXTS[0], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        before_logits = model(ids).logits
    before, rows = compare_compression(
        model, tokenizer, TEXTS, TEXTS, sparsity=0.5, methods=["magnitude", "wanda"], progress=False
    )
    assert [(r.method, r.scope) for r in rows] == [
        ("magnitude", "global"),
        ("magnitude", "row"),
        ("wanda", "global"),
        ("wanda", "row"),
    ]
    assert all(r.pruned == prune_count(r.total, 0.5) and math.isfinite(r.perplexity) for r in rows)
    for row in rows:  # the per-text outcomes a paired comparison resamples make up the perplexity
        assert len(row.text_nlls) == len(row.text_tokens) == len(TEXTS)
        assert math.exp(sum(row.text_nlls) / sum(row.text_tokens)) == pytest.approx(row.perplexity, rel=1e-12)
    assert math.isfinite(before) and all(r.perplexity != before for r in rows)
    with torch.no_grad():
        assert torch.equal(model(ids).logits, before_logits)
    assert not hasattr(model, "peft_config")


def test_unknown_method_and_scope(tokenizer):
    model = make_model("llama")
    with pytest.raises(ValueError, match="compression method"):
        compression_masks(model, tokenizer, TEXTS, method="gradient")
    with pytest.raises(ValueError, match="scope"):
        compression_masks(model, tokenizer, TEXTS, method="magnitude", scope="layer")


def test_compress_cli_end_to_end(tokenizer, tmp_path, capsys):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from hf_sparc.cli import main

    make_model("llama").save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(TEXTS))
    common = ["--model", str(tmp_path / "model"), "--reference", str(texts), "--eval", str(texts)]
    out = tmp_path / "compressed"
    argv = ["compress", *common, "--sparsity", "0.5", "--method", "wanda", "--scope", "row", "--merged",
            "--objective", "next_token_logprob"]  # fmt: skip
    assert main([*argv, "--output", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert [r["method"] for r in report["rows"]] == [
        "wanda",
        "lrp",
        "lrp-l2",
        "lrp-wanda",
        "gradient-wanda",
        "magnitude",
    ]
    assert report["objective"] == "next_token_logprob"
    assert all(r["pruned"] == prune_count(r["total"], 0.5) for r in report["rows"])
    base = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    loaded = PeftModel.from_pretrained(base, out)
    assert sum(loaded.peft_config["default"].module_counts.values()) == report["rows"][0]["pruned"]
    merged = AutoModelForCausalLM.from_pretrained(out / "merged")
    zeros = sum(
        int((p == 0).sum())
        for n, p in merged.named_parameters()
        if "layers" in n and n.endswith("proj.weight")
    )
    assert zeros == report["rows"][0]["pruned"]

    capsys.readouterr()
    assert main(["compress", *common, "--sparsity", "1.5", "--output", str(tmp_path / "bad")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not (tmp_path / "bad").exists()
