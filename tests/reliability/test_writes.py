"""Every writer: never overwrites unasked, and an interrupted write leaves the old complete output
or none — never a mix of old and new files, never staging debris."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import torch
import transformers.modeling_utils
from peft import PeftModel
from sparc_fixtures import masks_for, relevance, tiny_model
from transformers import AutoModelForCausalLM

import hf_sparc
import hf_sparc._files
import hf_sparc.tuner.io
from hf_sparc._files import AtomicFolder
from reliability.helpers import CLEAN_ERRORS, logits


@dataclass(frozen=True)
class Variant:
    """One of two different outputs a writer can produce (different masks)."""

    peft_model: PeftModel
    pruner: hf_sparc.SparcPruner


def _variant(seed: int) -> Variant:
    model = tiny_model("llama")
    masks = masks_for(model, "neuron", seed=seed)
    pruner = hf_sparc.SparcPruner(hf_sparc.SparcConfig(count=10))
    pruner.relevance = {"general": relevance(model, "neuron", seed=seed)}
    pruner.masks = masks
    return Variant(hf_sparc.apply_masks(model, masks), pruner)


@pytest.fixture(scope="module")
def variants() -> tuple[Variant, Variant]:
    return _variant(1), _variant(2)


def _masks_value(masks: hf_sparc.Masks) -> dict[str, list[int]]:
    return {name: idx.tolist() for name, idx in masks.items()}


@dataclass(frozen=True)
class Writer:
    """How to write a variant to ``target`` and how to read back what a user would get."""

    write: Callable[[Variant, Path, bool], None]
    read: Callable[[Path], Any]


WRITERS: dict[str, Writer] = {
    "save_adapter": Writer(
        lambda v, t, o: hf_sparc.save_adapter(v.peft_model, t, overwrite=o),
        lambda t: logits(PeftModel.from_pretrained(tiny_model("llama"), t)),
    ),
    "PeftModel.save_pretrained": Writer(
        lambda v, t, o: v.peft_model.save_pretrained(t, overwrite=o),
        lambda t: logits(PeftModel.from_pretrained(tiny_model("llama"), t)),
    ),
    "Masks.save": Writer(
        lambda v, t, o: v.pruner.masks.save(t / "masks.safetensors", overwrite=o),
        lambda t: _masks_value(hf_sparc.Masks.load(t / "masks.safetensors")),
    ),
    "Relevance.save": Writer(
        lambda v, t, o: v.pruner.relevance["general"].save(t / "rel.safetensors", overwrite=o),
        lambda t: dict(hf_sparc.Relevance.load(t / "rel.safetensors")),
    ),
    "SparcPruner.save_pretrained": Writer(
        lambda v, t, o: v.pruner.save_pretrained(t, overwrite=o),
        lambda t: _pruner_value(hf_sparc.SparcPruner.from_pretrained(t)),
    ),
    "export_merged": Writer(
        lambda v, t, o: hf_sparc.export_merged(v.peft_model, t, overwrite=o),
        lambda t: logits(AutoModelForCausalLM.from_pretrained(t)),
    ),
    "export_ia3": Writer(
        lambda v, t, o: hf_sparc.export_ia3(v.peft_model, t, overwrite=o),
        lambda t: logits(PeftModel.from_pretrained(tiny_model("llama"), t)),
    ),
}


def _pruner_value(pruner: hf_sparc.SparcPruner) -> tuple[Any, ...]:
    return _masks_value(pruner.masks), {n: t.tolist() for n, t in pruner.relevance["general"].items()}


def same(a: Any, b: Any) -> bool:
    """Deep equality where tensors compare bit for bit."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, tuple):
        return isinstance(b, tuple) and len(a) == len(b) and all(map(same, a, b))
    return a == b


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("writer", list(WRITERS))
def test_never_overwrites_without_overwrite(
    variants: tuple[Variant, Variant], tmp_path: Path, writer: str
) -> None:
    old, new = variants
    write, read = WRITERS[writer].write, WRITERS[writer].read
    write(old, tmp_path, False)
    before, expected_old = files(tmp_path), read(tmp_path)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write(new, tmp_path, False)
    assert files(tmp_path) == before
    write(new, tmp_path, True)
    result = read(tmp_path)
    assert not same(result, expected_old), "the two variants must differ for this test to mean anything"
    # a fresh write of the new variant reads back the same
    write(new, tmp_path / "fresh", False)
    assert same(result, read(tmp_path / "fresh"))


class _Crash(OSError):
    """The simulated fault (disk full, killed process): an OSError like the real ones."""


def _crash_on_replace(monkeypatch: pytest.MonkeyPatch, call: int) -> None:
    """Make the ``call``-th rename into the target fail (renames inside the staging folder are not
    counted: they belong to the write phase, which the tensor-write fault covers)."""
    real, calls = os.replace, []

    def replace(src: Any, dst: Any) -> None:
        if "staging" not in str(dst):
            calls.append(dst)
        if len(calls) == call and "staging" not in str(dst):
            raise _Crash(f"simulated crash renaming {dst}")
        real(src, dst)

    monkeypatch.setattr(os, "replace", replace)


def _crash_in_tensor_write(monkeypatch: pytest.MonkeyPatch, call: int) -> None:
    """Make the ``call``-th safetensors write stop half-way (a half-written file stays behind)."""
    real, calls = safetensors.torch.save_file, []

    def save_file(tensors: Any, filename: Any, *args: Any, **kwargs: Any) -> None:
        calls.append(filename)
        real(tensors, filename, *args, **kwargs)
        if len(calls) == call:
            data = Path(filename).read_bytes()
            Path(filename).write_bytes(data[: len(data) // 2])
            raise _Crash(f"simulated crash writing {filename}")

    # every module that writes safetensors holds its own reference to save_file
    for module, name in (
        (hf_sparc._files, "save_file"),
        (hf_sparc.tuner.io, "save_file"),
        (transformers.modeling_utils, "safe_save_file"),
    ):
        monkeypatch.setattr(module, name, save_file)


FAULTS = {"rename": _crash_on_replace, "tensor write": _crash_in_tensor_write}


# rename: the 3 renames of a 3-file commit; tensor write: a writer writes at most 2 safetensors files
@pytest.mark.parametrize(
    ("fault", "call"), [("rename", 1), ("rename", 2), ("rename", 3), ("tensor write", 1), ("tensor write", 2)]
)
@pytest.mark.parametrize("existing", [True, False], ids=["over an old output", "fresh"])
@pytest.mark.parametrize("writer", list(WRITERS))
def test_interrupted_write_leaves_old_or_nothing(
    variants: tuple[Variant, Variant],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    writer: str,
    existing: bool,
    fault: str,
    call: int,
) -> None:
    old, new = variants
    write, read = WRITERS[writer].write, WRITERS[writer].read
    write(new, tmp_path / "reference", False)
    expected_new = read(tmp_path / "reference")
    target = tmp_path / "target"
    expected_old = None
    if existing:
        write(old, target, False)
        expected_old = read(target)
    with monkeypatch.context() as patch:
        FAULTS[fault](patch, call)
        try:
            write(new, target, True)
            crashed = False
        except _Crash:
            crashed = True
    debris = [p.name for p in target.rglob("*") if "staging" in p.name or ".tmp-" in p.name]
    assert not debris, f"left behind: {debris}"
    try:
        result = read(target)
    except CLEAN_ERRORS:
        assert crashed, "a successful write must be readable"
        return
    if crashed:
        assert existing and same(result, expected_old), "after a crash only the old output may be readable"
    else:
        assert same(result, expected_new)


def test_atomic_folder_appears_only_when_complete(tmp_path: Path) -> None:
    target = tmp_path / "run"
    with pytest.raises(RuntimeError), AtomicFolder(target, overwrite=False) as folder:
        (folder.work / "half").write_text("x")
        raise RuntimeError("the run failed")
    assert list(tmp_path.iterdir()) == [], "a failed run left files behind"
    with AtomicFolder(target, overwrite=False) as folder:
        (folder.work / "old").write_text("old")
    assert [p.name for p in target.iterdir()] == ["old"]
    with pytest.raises(FileExistsError, match="--overwrite"):
        AtomicFolder(target, overwrite=False)
    with AtomicFolder(target, overwrite=True) as folder:
        (folder.work / "new").write_text("new")
    assert [p.name for p in target.iterdir()] == ["new"]
    assert list(tmp_path.iterdir()) == [target], "no staging or old folder left beside the target"
