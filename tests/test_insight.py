"""hf_sparc.workflows.insight: top contexts of pruned units (read where the collector reads them),
adapter masks (hf_sparc.tuner.adapter_masks), markdown/JSON, layer plot."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import TEXTS, make_model
from peft import PeftModel

import hf_sparc
from hf_sparc.tuner.adapter_masks import adapter_masks
from hf_sparc.workflows import insight


def _masks(model, tokenizer, level: str, count: int = 3):
    rel = hf_sparc.attribute(
        model, TEXTS, tokenizer=tokenizer, method="activation", level=level, progress=False
    )
    return hf_sparc.select(rel, count=count, keep="lowest")


@pytest.mark.parametrize(("arch", "level"), [("llama", "neuron"), ("llama", "head"), ("gpt2", "neuron")])
def test_lists_exactly_the_pruned_units_with_valid_contexts(tokenizer, arch, level):
    model = make_model(arch)
    masks = _masks(model, tokenizer, level)
    units = insight.unit_contexts(model, tokenizer, masks, TEXTS, top_k=4, context_tokens=3, progress=False)
    assert [(u.module, u.unit) for u in units] == [(n, i) for n, idx in masks.items() for i in idx.tolist()]
    for unit in units:
        assert len(unit.contexts) == 4
        magnitudes = [abs(c.activation) for c in unit.contexts]
        assert magnitudes == sorted(magnitudes, reverse=True)
        for c in unit.contexts:
            ids = tokenizer(TEXTS[c.text_index])["input_ids"]
            assert c.token == tokenizer.decode([ids[c.position]])
            assert c.before == tokenizer.decode(ids[max(0, c.position - 3) : c.position])


def test_top_activation_matches_a_direct_forward(tokenizer):
    model = make_model("llama")
    masks = _masks(model, tokenizer, "neuron", count=1)
    ((name, idx),) = masks.items()
    (unit,) = insight.unit_contexts(model, tokenizer, masks, TEXTS, top_k=1, progress=False)
    seen = []
    hook = model.get_submodule(name).register_forward_hook(lambda _m, _i, out: seen.append(out[0, :, idx[0]]))
    with torch.no_grad():
        for text in TEXTS:
            model(**tokenizer(text, return_tensors="pt"))
    hook.remove()
    best = max(torch.cat(seen).tolist(), key=abs)
    assert unit.contexts[0].activation == pytest.approx(best, rel=1e-5)


def test_peft_model_shows_units_before_the_cut_and_adapter_masks_round_trip(tokenizer, tmp_path):
    model = make_model("llama")
    masks = _masks(model, tokenizer, "head")
    plain = insight.unit_contexts(model, tokenizer, masks, TEXTS, progress=False)
    hf_sparc.save_adapter(hf_sparc.apply_masks(model, masks), tmp_path / "adapter")
    loaded = PeftModel.from_pretrained(make_model("llama"), tmp_path / "adapter")
    back = adapter_masks(loaded)
    assert back.level == masks.level
    assert {n: i.tolist() for n, i in back.items()} == {n: i.tolist() for n, i in masks.items()}
    assert insight.unit_contexts(loaded, tokenizer, back, TEXTS, progress=False) == plain


def test_markdown_json_and_plot(tokenizer, tmp_path):
    model = make_model("llama")
    masks = _masks(model, tokenizer, "neuron", count=4)
    units = insight.unit_contexts(model, tokenizer, masks, TEXTS, top_k=2, progress=False)
    text = insight.render_markdown(units, masks)
    assert text.count("\n- neuron ") == masks.total()
    data = json.loads(json.dumps(insight.to_json(units, masks)))
    assert data["pruned"] == masks.total() and len(data["units"]) == masks.total()
    insight.plot_layers(masks, tmp_path / "layers.png")
    assert (tmp_path / "layers.png").read_bytes()[:4] == b"\x89PNG"


def test_weight_level_is_refused_but_plots(tokenizer, tmp_path):
    model = make_model("llama")
    masks = hf_sparc.select(hf_sparc.attribute(model, method="magnitude", level="weight"), count=10)
    with pytest.raises(ValueError, match="neuron- or head-level"):
        insight.unit_contexts(model, tokenizer, masks, TEXTS, progress=False)
    insight.plot_layers(masks, tmp_path / "w.png")
    assert insight.layer_of("model.layers.12.mlp.up_proj") == 12 and insight.layer_of("lm_head") is None
