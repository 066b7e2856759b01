"""The compact ``adapter_config.json`` layout (hf_sparc.tuner.compact): per-module fields grouped by
layer template, read back into exactly the per-module fields PEFT works with."""

from __future__ import annotations

import json
import re

import pytest

from hf_sparc.tuner.compact import split_layer
from hf_sparc.tuner.config import SparcAdapterConfig, shape_fingerprint


def _config(**overrides) -> SparcAdapterConfig:
    names = [f"model.layers.{i}.self_attn.o_proj" for i in (0, 1, 2, 9, 10, 11)]
    shapes = {n: [64, 64] for n in names}
    shapes["model.layers.11.self_attn.o_proj"] = [64, 32]  # odd one out: a group of its own
    values = {
        "level": "head",
        "num_heads": 4,
        "module_counts": {n: i + 1 for i, n in enumerate(names)},
        "module_shapes": shapes,
        "mask_modules": {n: n.removesuffix(".o_proj") for n in names},
        "module_digests": {n: f"{i:02d}" * 8 for i, n in enumerate(names)},
        "fingerprint": shape_fingerprint(shapes),
        "target_modules": "^(?:" + "|".join(re.escape(n) for n in names) + ")$",
    }
    return SparcAdapterConfig(**{**values, **overrides})


def _round_trip(config: SparcAdapterConfig) -> tuple[dict, SparcAdapterConfig]:
    written = json.loads(json.dumps(config.to_dict(), sort_keys=True))  # as PEFT writes it: keys sorted
    return written, SparcAdapterConfig(**written)


def test_round_trip_restores_every_per_module_field():
    config = _config()
    written, read = _round_trip(config)
    assert not {"module_counts", "module_shapes", "mask_modules", "module_digests"} & set(written)
    assert set(written["modules"]) == {"model.layers.{}.self_attn.o_proj", "model.layers.11.self_attn.o_proj"}
    assert written["mask_templates"]["model.layers.{}.self_attn.o_proj"] == "model.layers.{}.self_attn"
    assert read.module_counts == config.module_counts
    assert read.module_shapes == config.module_shapes
    assert read.mask_modules == config.mask_modules
    # digests are written as their first 8 hex digits and follow the numeric layer order ("10" < "9" as text)
    assert read.module_digests == {n: d[:8] for n, d in config.module_digests.items()}
    assert read.fingerprint == config.fingerprint and read.modules == {} and read.digests == {}
    pattern = re.compile(read.target_modules)
    assert all(pattern.match(n) for n in config.module_counts)
    assert not pattern.match("model.layers.3.self_attn.o_proj") and not pattern.match("model.layers.1.mlp")


def test_template_is_the_first_layer_number():
    assert split_layer("transformer.h.12.mlp.c_fc") == ("transformer.h.{}.mlp.c_fc", "12")
    assert split_layer("lm_head") == ("lm_head", "")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda w: w["digests"].update({"model.layers.{}.self_attn.o_proj": "abc"}),
            "do not match its layers",
        ),
        (lambda w: w["digests"].update({"model.layers.11.self_attn.o_proj": "abc"}), "shorter than 8"),
        (lambda w: w.update(module_counts={"x": 1}), "mixes the compact and the per-module layout"),
        (lambda w: w["shapes"].pop("model.layers.11.self_attn.o_proj"), "no entry in shapes"),
        (lambda w: w["modules"]["model.layers.{}.self_attn.o_proj"].update({"3": "two"}), "layer: count"),
    ],
)
def test_damaged_compact_fields_are_refused(edit, message):
    written, _ = _round_trip(_config())
    edit(written)
    with pytest.raises(ValueError, match=message):
        SparcAdapterConfig(**written)
