"""Every loader refuses pickle, damaged files and malformed configs with one clean error, and never
applies a wrong mask: fixed cases plus property-based random corruptions."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from peft import PeftModel
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from hf_sparc import Masks, Relevance, SparcConfig, SparcPruner
from hf_sparc.tuner import SparcAdapterConfig
from hf_sparc.workflows.pruner import CONFIG_NAME, MASKS_NAME, RELEVANCE_NAMES
from reliability.helpers import CLEAN_ERRORS, Saved, assert_bit_identical, logits, snapshot

CORRUPTION = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

# -- the adapter loaders -------------------------------------------------------------------------
ADAPTER_LOADERS: dict[str, Callable[[Saved, Path], torch.nn.Module]] = {
    "PeftModel.from_pretrained": lambda s, d: PeftModel.from_pretrained(s.fresh_base(), d),
    "AutoModelForCausalLM.from_pretrained": lambda s, d: AutoModelForCausalLM.from_pretrained(d),
    "model.load_adapter": lambda s, d: _load_adapter(s.fresh_base(), d),
}


def _load_adapter(model: torch.nn.Module, directory: Path) -> torch.nn.Module:
    model.load_adapter(directory)
    return model


# transformers' loaders read the weights file themselves: an unreadable file is safetensors' own
# SafetensorError there, a tensor of the wrong size transformers' RuntimeError ("ignore_mismatched_sizes").
# hf_sparc has no hook before them; both stop the load before any mask is used.
TRANSFORMERS_ERRORS = (*CLEAN_ERRORS, RuntimeError, SafetensorError)


def errors_of(loader: str) -> tuple[type[Exception], ...]:
    """The exception types ``loader`` may raise for a damaged adapter (hf_sparc's own path: clean only)."""
    return CLEAN_ERRORS if loader == "PeftModel.from_pretrained" else TRANSFORMERS_ERRORS


def load_and_run(saved: Saved, loader: str, directory: Path) -> torch.Tensor:
    """Logits of the model an adapter loader gives: the masks are used, so lazy checks fire too."""
    return logits(ADAPTER_LOADERS[loader](saved, directory).eval())


def write_json(path: Path, edit: Callable[[dict[str, Any]], Any]) -> None:
    """Apply ``edit`` to the JSON object in ``path``; an edit returning a list replaces the object."""
    values = json.loads(path.read_text())
    result = edit(values)
    path.write_text(json.dumps(result if isinstance(result, list) else values))


# -- pickle ------------------------------------------------------------------------------------
class _Payload:
    """Creates ``sentinel`` when unpickled: proof that a loader ran code from a file."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return (os.mkdir, (str(self.sentinel),))


def _pickled(path: Path, sentinel: Path) -> None:
    torch.save({"base_model.model.model.layers.0.mlp.up_proj.pruning_indices": _Payload(sentinel)}, path)


def _pickle_targets(saved: Saved, tmp_path: Path, sentinel: Path) -> dict[str, Callable[[], Any]]:
    """Each loader aimed at a folder/file where the data is a pickle that would create ``sentinel``."""
    adapter = tmp_path / "adapter"
    shutil.copytree(saved.adapter, adapter)
    (adapter / "adapter_model.safetensors").unlink()
    _pickled(adapter / "adapter_model.bin", sentinel)
    pruner = tmp_path / "pruner"
    shutil.copytree(saved.pruner, pruner)
    for name in (MASKS_NAME, *RELEVANCE_NAMES.values(), CONFIG_NAME):
        _pickled(pruner / name, sentinel)
    _pickled(tmp_path / "masks.bin", sentinel)
    return {
        **{name: (lambda name=name: load_and_run(saved, name, adapter)) for name in ADAPTER_LOADERS},
        "SparcAdapterConfig.from_pretrained": lambda: SparcAdapterConfig.from_pretrained(str(adapter)),
        "Masks.load": lambda: Masks.load(pruner / MASKS_NAME),
        "Masks.load(.bin)": lambda: Masks.load(tmp_path / "masks.bin"),
        "Relevance.load": lambda: Relevance.load(pruner / RELEVANCE_NAMES["general"]),
        "SparcPruner.from_pretrained": lambda: SparcPruner.from_pretrained(pruner),
        "SparcConfig.from_pretrained": lambda: SparcConfig.from_pretrained(pruner),
    }


def test_no_loader_ever_unpickles(saved: Saved, tmp_path: Path) -> None:
    sentinel = tmp_path / "pwned"
    targets = _pickle_targets(saved, tmp_path, sentinel)
    for name, load in targets.items():
        with pytest.raises(CLEAN_ERRORS) as error:
            load()
        assert str(error.value), name
        assert not sentinel.exists(), f"{name} unpickled the payload"
    # the adapter loaders say why: safetensors only
    with pytest.raises(FileNotFoundError, match="safetensors only"):
        targets["PeftModel.from_pretrained"]()


# -- malformed adapter_config.json ---------------------------------------------------------------
MODULE = "model.layers.0.mlp.up_proj"
GROUP = "model.layers.{}.mlp.up_proj"  # the compact config's template of MODULE
CONFIG_DAMAGE: dict[str, tuple[Callable[[dict], Any], str]] = {
    "missing level": (lambda c: c.pop("level"), "no level"),
    "missing shapes": (lambda c: c.pop("shapes"), "shapes"),
    "missing modules": (lambda c: c.pop("modules"), "without modules"),
    "level not a string": (lambda c: c.update(level=1), "level"),
    "unknown level": (lambda c: c.update(level="row"), "level"),
    "shapes a list": (lambda c: c.update(shapes=list(c["shapes"])), "shapes"),
    "shape of strings": (lambda c: c["shapes"].update({GROUP: ["64", "32"]}), "shapes"),
    "count a string": (lambda c: c["modules"][GROUP].update({"0": "5"}), "modules"),
    "negative count": (lambda c: c["modules"][GROUP].update({"0": -1}), "modules"),
    "num_heads a string": (lambda c: c.update(num_heads="4"), "num_heads"),
    "target_modules a number": (lambda c: c.update(target_modules=5), "target_modules"),
    "provenance a list": (lambda c: c.update(provenance=[]), "provenance"),
    "digests for other modules": (lambda c: c["digests"].update(x="0" * 8), "digests"),
    "per-module fields beside compact ones": (lambda c: c.update(module_counts={MODULE: 1}), "mixes"),
    "extra key": (lambda c: c.update(invert_masks=True), "unknown field"),
    "unknown peft_type": (lambda c: c.update(peft_type="FOO"), "FOO"),
    "other peft_type": (lambda c: c.update(peft_type="LORA"), "LORA"),
    "not an object": (lambda c: [c], "object"),
}


@pytest.mark.parametrize("damage", list(CONFIG_DAMAGE))
def test_malformed_adapter_config_is_one_clear_error(saved: Saved, adapter_copy: Path, damage: str) -> None:
    edit, pattern = CONFIG_DAMAGE[damage]
    write_json(adapter_copy / "adapter_config.json", edit)
    with pytest.raises(ValueError, match=pattern) as error:
        SparcAdapterConfig.from_pretrained(str(adapter_copy))
    assert "\n" not in str(error.value)
    if damage in PEFT_DISPATCH:
        # PEFT and transformers read peft_type before any SPARC code runs: not a SPARC adapter
        # any more, so either PEFT's own error or whatever PEFT loads (never a mask)
        for loader in ADAPTER_LOADERS:
            try:
                result = load_and_run(saved, loader, adapter_copy)
            except (*TRANSFORMERS_ERRORS, KeyError, TypeError) as error:
                assert str(error)
            else:
                assert not torch.equal(result, saved.expected), f"{loader} applied a mask from {damage}"
        return
    for loader in ADAPTER_LOADERS:
        with pytest.raises(ValueError, match=pattern):
            load_and_run(saved, loader, adapter_copy)


PEFT_DISPATCH = ("unknown peft_type", "other peft_type", "not an object")


# -- damaged index tensors ------------------------------------------------------------------------
KEY = f"base_model.model.{MODULE}.pruning_indices"
INDEX_DAMAGE: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], str]] = {
    "float dtype": (lambda t: t.float(), "integers"),
    "bool dtype": (lambda t: t.bool(), "integers"),
    "2-D": (lambda t: t[None, :], "1-D"),
    "out of range": (lambda t: torch.cat([t[:-1], torch.tensor([64])]), "out of range"),
    "negative": (lambda t: torch.cat([torch.tensor([-1]), t[1:]]), "out of range"),
    "duplicated": (lambda t: torch.cat([t[:1], t[:-1]]), "duplicated"),
    "one too few": (lambda t: t[:-1], "announces 5 indices"),
    "another valid set": (lambda t: torch.arange(t.numel()), "digest"),
}


@pytest.mark.parametrize("loader", list(ADAPTER_LOADERS))
@pytest.mark.parametrize("damage", list(INDEX_DAMAGE))
def test_damaged_indices_are_refused(saved: Saved, adapter_copy: Path, loader: str, damage: str) -> None:
    edit, pattern = INDEX_DAMAGE[damage]
    path = adapter_copy / "adapter_model.safetensors"
    state = load_file(path)
    save_file({**state, KEY: edit(state[KEY])}, path)
    try:
        result = load_and_run(saved, loader, adapter_copy)
    except errors_of(loader) as error:
        if isinstance(error, ValueError):  # hf_sparc's own checks name the module and the problem
            assert MODULE in str(error)
        if loader == "PeftModel.from_pretrained":
            assert re.search(pattern, str(error))
    else:
        # transformers casts a tensor to the buffer's dtype (float 7.0 -> int 7) before hf_sparc sees
        # it; the digest then proves the indices are the saved ones
        assert loader != "PeftModel.from_pretrained", f"{damage} was accepted"
        assert torch.equal(result, saved.expected), f"{damage} gave a different mask"


def _masks_file(saved: Saved, tmp_path: Path, edit: Callable[[dict[str, torch.Tensor]], None]) -> Path:
    """The saved masks re-written with ``edit`` applied to their tensors (checksum dropped: an old file)."""
    from safetensors import safe_open

    source = saved.pruner / MASKS_NAME
    with safe_open(source, "pt") as handle:
        metadata = {k: v for k, v in handle.metadata().items() if not k.endswith(".sha256")}
    tensors = load_file(source)
    edit(tensors)
    save_file(tensors, tmp_path / MASKS_NAME, metadata=metadata)
    return tmp_path / MASKS_NAME


@pytest.mark.parametrize("damage", ["float dtype", "2-D", "out of range", "negative", "duplicated"])
def test_damaged_masks_file_names_the_module(saved: Saved, tmp_path: Path, damage: str) -> None:
    edit, pattern = INDEX_DAMAGE[damage]
    name = next(iter(Masks.load(saved.pruner / MASKS_NAME)))
    path = _masks_file(saved, tmp_path, lambda t: t.update({name: edit(t[name])}))
    with pytest.raises(ValueError, match=pattern) as error:
        Masks.load(path)
    assert name in str(error.value) and str(path) in str(error.value)


def test_masks_file_without_checksum_still_loads(saved: Saved, tmp_path: Path) -> None:
    """Files from before the checksum load (the indices are still validated)."""
    path = _masks_file(saved, tmp_path, lambda t: None)
    original = Masks.load(saved.pruner / MASKS_NAME)
    assert {n: t.tolist() for n, t in Masks.load(path).items()} == {
        n: t.tolist() for n, t in original.items()
    }


@pytest.mark.parametrize(
    ("edit", "pattern"),
    [
        (lambda t: t.to(torch.int64), "floating point"),
        (lambda t: t.clone().fill_(float("nan")), "NaN"),
        (lambda t: t.clone().fill_(float("inf")), "Inf"),
    ],
)
def test_damaged_relevance_file_names_the_module(tmp_path: Path, edit, pattern: str) -> None:
    from hf_sparc import RelevanceInfo

    info = RelevanceInfo("lrp", "neuron", 1, 1)
    Relevance({"a": torch.zeros(3), "b": torch.ones(2)}, info).save(tmp_path / "r.safetensors")
    from safetensors import safe_open

    with safe_open(tmp_path / "r.safetensors", "pt") as handle:
        metadata = {k: v for k, v in handle.metadata().items() if not k.endswith(".sha256")}
    save_file({"a": torch.zeros(3), "b": edit(torch.ones(2))}, tmp_path / "r.safetensors", metadata=metadata)
    with pytest.raises(ValueError, match=pattern) as error:
        Relevance.load(tmp_path / "r.safetensors")
    assert "of b " in str(error.value)


# -- truncated and zero-byte files ---------------------------------------------------------------
FILE_LOADERS: dict[str, tuple[str, Callable[[Saved, Path], Any]]] = {
    "adapter weights / PeftModel": (
        "adapter_model.safetensors",
        lambda s, d: load_and_run(s, ADAPTERS[0], d),
    ),
    "adapter weights / Auto": ("adapter_model.safetensors", lambda s, d: load_and_run(s, ADAPTERS[1], d)),
    "adapter weights / load_adapter": (
        "adapter_model.safetensors",
        lambda s, d: load_and_run(s, ADAPTERS[2], d),
    ),
    "adapter config / PeftModel": ("adapter_config.json", lambda s, d: load_and_run(s, ADAPTERS[0], d)),
    "adapter config / Auto": ("adapter_config.json", lambda s, d: load_and_run(s, ADAPTERS[1], d)),
    "adapter config / load_adapter": ("adapter_config.json", lambda s, d: load_and_run(s, ADAPTERS[2], d)),
    "masks / Masks.load": (MASKS_NAME, lambda s, d: Masks.load(d / MASKS_NAME)),
    "relevance / Relevance.load": (
        RELEVANCE_NAMES["general"],
        lambda s, d: Relevance.load(d / RELEVANCE_NAMES["general"]),
    ),
    "masks / SparcPruner": (MASKS_NAME, lambda s, d: SparcPruner.from_pretrained(d)),
    "relevance / SparcPruner": (RELEVANCE_NAMES["general"], lambda s, d: SparcPruner.from_pretrained(d)),
    "config / SparcPruner": (CONFIG_NAME, lambda s, d: SparcPruner.from_pretrained(d)),
    "config / SparcConfig": (CONFIG_NAME, lambda s, d: SparcConfig.from_pretrained(d)),
}
ADAPTERS = list(ADAPTER_LOADERS)


@pytest.mark.parametrize("cut", ["zero-byte", "half", "last byte"])
@pytest.mark.parametrize("case", list(FILE_LOADERS))
def test_truncated_files_give_a_clean_error(saved: Saved, tmp_path: Path, case: str, cut: str) -> None:
    name, load = FILE_LOADERS[case]
    folder = tmp_path / "copy"
    source = saved.adapter if name.startswith("adapter") else saved.pruner
    shutil.copytree(source, folder)
    data = (folder / name).read_bytes()
    # "last byte": of the content; a JSON file's trailing newline is not content
    keep = {"zero-byte": 0, "half": len(data) // 2, "last byte": len(data.rstrip()) - 1}[cut]
    (folder / name).write_bytes(data[:keep])
    transformers_path = case.endswith(("Auto", "load_adapter"))
    with pytest.raises(TRANSFORMERS_ERRORS if transformers_path else CLEAN_ERRORS) as error:
        load(saved, folder)
    assert str(error.value).strip()


# -- property: random corruptions never crash and never apply a wrong mask ------------------------
@CORRUPTION
@given(data=st.data())
def test_random_byte_damage_to_adapter_weights(saved: Saved, adapter_copy: Path, data: st.DataObject) -> None:
    path = adapter_copy / "adapter_model.safetensors"
    original = (saved.adapter / "adapter_model.safetensors").read_bytes()
    damaged = _damage(original, data)
    path.write_bytes(damaged)
    try:
        result = load_and_run(saved, "PeftModel.from_pretrained", adapter_copy)
    except CLEAN_ERRORS as error:
        assert str(error).strip()
    else:
        assert torch.equal(result, saved.expected), "a damaged adapter was applied with a different mask"


def _damage(original: bytes, data: st.DataObject) -> bytes:
    """Truncate, overwrite a span, or flip bits of ``original``, at positions Hypothesis picks."""
    kind = data.draw(st.sampled_from(["truncate", "overwrite", "flip"]))
    position = data.draw(st.integers(0, len(original) - 1))
    if kind == "truncate":
        return original[:position]
    if kind == "overwrite":
        span = data.draw(st.binary(min_size=1, max_size=16))
        return original[:position] + span + original[position + len(span) :]
    bit = data.draw(st.integers(0, 7))
    return original[:position] + bytes([original[position] ^ (1 << bit)]) + original[position + 1 :]


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 100) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


@CORRUPTION
@given(data=st.data())
def test_random_config_edits(saved: Saved, adapter_copy: Path, data: st.DataObject) -> None:
    config_path = adapter_copy / "adapter_config.json"
    values = json.loads((saved.adapter / "adapter_config.json").read_text())
    container, key = _pick_location(values, data)
    container[key] = data.draw(JSON_VALUES, label=f"new value of {key!r}")
    config_path.write_text(json.dumps(values))
    try:
        result = load_and_run(saved, "PeftModel.from_pretrained", adapter_copy)
    except (*CLEAN_ERRORS, KeyError) as error:  # KeyError: PEFT's own for an unknown peft_type/task_type
        assert str(error).strip()
    else:
        assert torch.equal(result, saved.expected), f"editing {key!r} silently changed the mask"


def _pick_location(values: dict[str, Any], data: st.DataObject) -> tuple[dict[str, Any], str]:
    """A (container, key) inside the config: a top-level field or an entry of a per-module map."""
    # peft_type is read by PEFT's dispatch before SPARC code runs (tested above, not fuzzed)
    key = data.draw(st.sampled_from(sorted(set(values) - {"peft_type"})))
    nested = values[key]
    if isinstance(nested, dict) and nested and data.draw(st.booleans()):
        return nested, data.draw(st.sampled_from(sorted(nested)))
    return values, key


@CORRUPTION
@given(data=st.data())
def test_random_byte_damage_to_masks_and_relevance(saved: Saved, tmp_path: Path, data: st.DataObject) -> None:
    name = data.draw(st.sampled_from([MASKS_NAME, RELEVANCE_NAMES["general"]]))
    original = (saved.pruner / name).read_bytes()
    path = tmp_path / name
    path.write_bytes(_damage(original, data))
    load = Masks.load if name == MASKS_NAME else Relevance.load
    try:
        loaded = load(path)
    except CLEAN_ERRORS as error:
        assert str(error).strip()
    else:
        reference = load(saved.pruner / name)
        assert loaded.keys() == reference.keys()
        assert all(torch.equal(loaded[n], reference[n]) for n in reference), "damaged file read as valid"


@CORRUPTION
@given(data=st.data())
def test_random_pruner_config_edits(saved: Saved, tmp_path: Path, data: st.DataObject) -> None:
    values = json.loads((saved.pruner / CONFIG_NAME).read_text())
    key = data.draw(st.sampled_from(sorted(values)))
    values[key] = data.draw(JSON_VALUES, label=f"new value of {key!r}")
    (tmp_path / CONFIG_NAME).write_text(json.dumps(values))
    try:
        config = SparcConfig.from_pretrained(tmp_path)
    except ValueError as error:
        assert str(error).strip()
    else:  # accepted only as written (count=None is filled with the default when fraction is None too)
        loaded = config.to_dict()
        assert all(loaded[k] == v for k, v in values.items() if not (k == "count" and v is None))


def test_base_after_a_refused_index_file_is_unchanged_and_refuses_to_run(
    saved: Saved, adapter_copy: Path
) -> None:
    """Index files are checked while PEFT loads them, after it has wrapped the target modules: the
    weights stay bit-identical and the half-attached adapter refuses to run rather than prune
    anything (documented: discard that model object)."""
    path = adapter_copy / "adapter_model.safetensors"
    state = load_file(path)
    save_file({**state, KEY: torch.arange(state[KEY].numel())}, path)
    base = saved.fresh_base()
    before = snapshot(base)
    with pytest.raises(ValueError, match="digest"):
        PeftModel.from_pretrained(base, adapter_copy)
    assert_bit_identical(base, before)
    with pytest.raises(ValueError, match="do not match the digest"):
        logits(base)
