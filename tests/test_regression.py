"""Bit-for-bit regression of relevance and masks on a fixed tiny model per architecture family.

``tests/fixtures/regression.json`` holds, for every family, method, level and objective below, the
SHA-256 of each module's relevance tensor (and of the masks selected from it), written by the code
*before* the layout redesign. Any change to attribution, rule placement, orientation or selection
that moves a single bit fails here, naming the case. Regenerate deliberately (and say why in the
commit) with ``HF_SPARC_REGENERATE=1 pytest tests/test_regression.py``.

Bits of a float depend on the machine's kernels (another CPU's matmul sums in another order), so
the fixture also holds the digest of a plain-torch forward and backward pass (no hf_sparc code)
and, per module, the sum, absolute sum and squared sum of each relevance tensor. Where that probe
matches, every digest must match; elsewhere the masks must still match bit for bit and each
relevance tensor's three sums within 1e-4 relative — a changed rule moves them far more.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch
from conftest import CONFIGS, TEXTS, make_model

import hf_sparc

FIXTURE = Path(__file__).with_name("fixtures") / "regression.json"
REGENERATE = os.environ.get("HF_SPARC_REGENERATE") == "1"

UNDESIRED = [
    {"prompt": "the cat sat on", "continuation": " the red mat"},
    {"prompt": "you said", "continuation": " the dog was very bad"},
    {"prompt": "one two three", "continuation": " four five one two"},
]

# (method, level, objective, absolute): every signal at every level it serves, plus the objectives
CASES = [
    *(
        (method, level, "next_token", False)
        for method in ("lrp", "cp-lrp", "gradient")
        for level in ("weight", "neuron", "head")
    ),
    ("lrp", "token", "next_token", False),
    ("lrp", "neuron", "next_token_centered", False),
    ("lrp", "neuron", "last_token_max", False),
    ("lrp", "weight", "next_token", True),
    ("wanda", "weight", "next_token", False),
    ("wanda", "neuron", "next_token", False),
    ("activation", "neuron", "next_token", False),
    ("activation", "head", "next_token", False),
    ("magnitude", "weight", "next_token", False),
    ("magnitude", "neuron", "next_token", False),
    ("random", "neuron", "next_token", False),
]


def _digest(tensor: torch.Tensor) -> str:
    tensor = tensor.detach().contiguous().cpu()
    header = f"{tensor.dtype}|{list(tensor.shape)}|".encode()
    return hashlib.sha256(header + tensor.reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest()[:32]


def _sums(scores: torch.Tensor) -> list[float]:
    values = scores.detach().double().flatten()
    return [float(values.sum()), float(values.abs().sum()), float(values.square().sum())]


def _arithmetic(tokenizer) -> str:
    """Digest of a tiny Llama's logits and gradients computed by torch alone: equal on machines
    whose kernels round alike."""
    model = make_model("llama")
    batch = tokenizer(TEXTS, return_tensors="pt", padding=True)
    logits = model(**batch).logits
    logits.float().logsumexp(-1).sum().backward()
    return _digest(torch.cat([logits.flatten(), *(p.grad.flatten() for p in model.parameters())]))


def _masks_digest(masks) -> dict[str, str]:
    return {name: _digest(indices) for name, indices in masks.items()}


def _case_key(method: str, level: str, objective: str, absolute: bool) -> str:
    return f"{method}/{level}/{objective}" + ("/abs" if absolute else "")


def _record(arch: str, tokenizer) -> tuple[dict[str, dict], dict[str, dict]]:
    """Per case, the digests of relevance and masks; and the sums of each relevance tensor."""
    model = make_model(arch)
    record: dict[str, dict] = {}
    sums: dict[str, dict] = {}
    for method, level, objective, absolute in CASES:
        common = dict(tokenizer=tokenizer, method=method, level=level, objective=objective, absolute=absolute)
        general = hf_sparc.attribute(model, TEXTS, batch_size=3, progress=False, **common)
        entry = {"relevance": {name: _digest(scores) for name, scores in general.items()}}
        case_sums = {"relevance": {name: _sums(scores) for name, scores in general.items()}}
        if level != "token":
            entry["select"] = _masks_digest(hf_sparc.select(general, fraction=0.25))
            if level == "weight":
                entry["select_row"] = _masks_digest(
                    hf_sparc.select(general, fraction=0.5, scope="row", model=model)
                )
        if method not in ("magnitude", "random") and level != "token" and objective == "next_token":
            undesired = hf_sparc.attribute(model, UNDESIRED, batch_size=2, progress=False, **common)
            entry["undesired"] = {name: _digest(scores) for name, scores in undesired.items()}
            case_sums["undesired"] = {name: _sums(scores) for name, scores in undesired.items()}
            entry["contrastive"] = _masks_digest(
                hf_sparc.select_contrastive(
                    undesired=undesired, general=general, fraction=0.1, protect_general=0.5
                )
            )
        record[_case_key(method, level, objective, absolute)] = entry
        sums[_case_key(method, level, objective, absolute)] = case_sums
    return record, sums


ARCHS = sorted(CONFIGS)
FLOAT_PARTS = ("relevance", "undesired")


@pytest.fixture(scope="module")
def stored() -> dict:
    if REGENERATE:
        return {}
    return json.loads(FIXTURE.read_text())


@pytest.fixture(scope="module")
def same_arithmetic(tokenizer, stored) -> bool:
    """Whether this machine's kernels round as the fixture's did (then every bit must match)."""
    return REGENERATE or _arithmetic(tokenizer) == stored["_arithmetic"]


@pytest.mark.parametrize("arch", ARCHS)
def test_relevance_and_masks_are_bit_identical_to_the_fixture(arch, tokenizer, stored, same_arithmetic):
    record, sums = _record(arch, tokenizer)
    if REGENERATE:
        data = json.loads(FIXTURE.read_text()) if FIXTURE.exists() else {}
        data[arch] = record
        data.setdefault("_sums", {})[arch] = sums
        data["_arithmetic"] = _arithmetic(tokenizer)
        FIXTURE.parent.mkdir(exist_ok=True)
        FIXTURE.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        pytest.skip("fixture regenerated")
    expected = stored[arch]
    assert sorted(record) == sorted(expected)
    compared = [part for part in {p for entry in expected.values() for p in entry}
                if same_arithmetic or part not in FLOAT_PARTS]  # fmt: skip
    changed = [
        f"{case}:{part}:{module}"
        for case, entry in expected.items()
        for part, digests in entry.items()
        if part in compared
        for module, digest in digests.items()
        if record[case].get(part, {}).get(module) != digest
    ]
    extra = [
        f"{case}:{part}" for case, entry in record.items() for part in entry if part not in expected[case]
    ]
    assert not changed and not extra, f"{len(changed)} digests differ, e.g. {changed[:5]}; new parts {extra}"
    moved = [
        f"{case}:{part}:{module}"
        for case, parts in stored["_sums"][arch].items()
        for part, modules in parts.items()
        for module, (total, absolute, square) in modules.items()
        if not _close(sums[case][part][module], total, absolute, square)
    ]
    assert not moved, f"{len(moved)} relevance tensors moved, e.g. {moved[:5]}"


def _close(now: list[float], total: float, absolute: float, square: float) -> bool:
    """The three sums agree within 1e-4 relative (the signed sum relative to the absolute sum)."""
    return (
        abs(now[0] - total) <= 1e-4 * absolute + 1e-30
        and abs(now[1] - absolute) <= 1e-4 * absolute + 1e-30
        and abs(now[2] - square) <= 1e-4 * square + 1e-30
    )
