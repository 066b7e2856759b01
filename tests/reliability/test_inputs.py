"""Awkward reference data: blank, huge and non-UTF-8 lines, missing columns, no pad token, a model
left in train mode with dropout — each a clear error or a documented, tested behaviour."""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import datasets
import pytest
import torch
from conftest import TEXTS, make_model

import hf_sparc
from hf_sparc.data.sources import load_texts


def _write(path: Path, lines: list[bytes]) -> str:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return str(path)


@pytest.mark.parametrize("suffix", [".txt", ".jsonl"])
def test_blank_and_whitespace_lines_are_skipped_with_a_warning(tmp_path: Path, suffix: str) -> None:
    texts = [t.encode() if suffix == ".txt" else json.dumps(t).encode() for t in TEXTS[:2]]
    path = _write(tmp_path / f"t{suffix}", [texts[0], b"", b"   \t", texts[1], b"\r"])
    with pytest.warns(UserWarning, match=r"skipped 3 empty or whitespace-only line"):
        assert load_texts(path) == TEXTS[:2]


@pytest.mark.parametrize("content", [b"", b"\n\n", b"  \n\t\n"], ids=["zero-byte", "newlines", "whitespace"])
@pytest.mark.parametrize("suffix", [".txt", ".jsonl", ".csv"])
def test_files_without_texts_are_refused_without_noise(tmp_path: Path, suffix: str, content: bytes) -> None:
    path = tmp_path / f"t{suffix}"
    path.write_bytes(content)
    expected = (
        r"has no header line|has no data rows" if suffix == ".csv" else r"t\.(txt|jsonl) holds no texts"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the error alone says it all
        with pytest.raises(ValueError, match=expected):
            load_texts(str(path))


def test_csv_blank_rows_are_skipped(tmp_path: Path) -> None:
    path = _write(tmp_path / "t.csv", [b"text,label", b"hello world,1", b",", b" , ", b"the cat,0"])
    assert [row["text"] for row in load_texts(path)] == ["hello world", "the cat"]


@pytest.mark.parametrize("suffix", [".txt", ".jsonl", ".csv"])
def test_non_utf8_files_are_refused_with_the_line(tmp_path: Path, suffix: str) -> None:
    header = [b"text"] if suffix == ".csv" else []
    good = b'"hello world"' if suffix == ".jsonl" else b"hello world"
    path = _write(tmp_path / f"t{suffix}", [*header, good, b"caf\xe9 latin-1"])
    with pytest.raises(ValueError, match=rf"is not UTF-8 text \(line {len(header) + 2}\)"):
        load_texts(path)


def test_very_long_line_is_kept_and_truncated_with_a_warning(tmp_path: Path, tokenizer) -> None:
    long_text = " ".join(["the cat sat on the mat"] * 20_000)
    path = _write(tmp_path / "long.txt", [long_text.encode(), b"hello world"])
    texts = load_texts(path)
    assert texts == [long_text, "hello world"]
    model = make_model("llama")
    with pytest.warns(UserWarning, match="1 of 2 reference texts were longer than max_length=16"):
        long = hf_sparc.attribute(model, texts, tokenizer=tokenizer, max_length=16, progress=False)
    # truncation keeps the first 16 tokens: the same relevance as the first 16 tokens given directly
    cut = tokenizer.decode(tokenizer(long_text)["input_ids"][:16])
    short = hf_sparc.attribute(
        model, [cut, "hello world"], tokenizer=tokenizer, max_length=16, progress=False
    )
    assert all(torch.allclose(long[n], short[n]) for n in long)


def test_dataset_without_the_named_column(tokenizer) -> None:
    dataset = datasets.Dataset.from_dict({"content": TEXTS})
    model = make_model("llama")
    with pytest.raises(ValueError, match=r"no 'text' column \(columns: \['content'\]\); pass text_column"):
        hf_sparc.attribute(model, dataset, tokenizer=tokenizer, progress=False)
    pruner = hf_sparc.SparcPruner(hf_sparc.SparcConfig(count=3))
    with pytest.raises(ValueError, match="no 'text' column"):
        pruner.fit(model, tokenizer, general=dataset)
    rel = hf_sparc.attribute(model, dataset, tokenizer=tokenizer, text_column="content", progress=False)
    assert rel.info.n_samples == len(TEXTS)
    with pytest.raises(TypeError, match=r"Reference item 0 is a dict; expected .*'text'"):
        hf_sparc.attribute(model, [{"content": t} for t in TEXTS], tokenizer=tokenizer, progress=False)


def test_tokenizer_without_pad_token(tokenizer) -> None:
    """Padding never contributes, so a tokenizer without a pad token pads with id 0 and gives the
    same relevance (up to float rounding) and the same masks as unpadded batches; it is not modified."""
    no_pad = copy.deepcopy(tokenizer)
    no_pad.pad_token = None
    assert no_pad.pad_token_id is None
    model = make_model("llama")
    padded = hf_sparc.attribute(model, TEXTS, tokenizer=no_pad, batch_size=8, progress=False)
    single = hf_sparc.attribute(model, TEXTS, tokenizer=no_pad, batch_size=1, progress=False)
    assert all(torch.allclose(padded[n], single[n], rtol=1e-4, atol=1e-6) for n in padded)
    as_lists = [{n: t.tolist() for n, t in hf_sparc.select(r, count=8).items()} for r in (padded, single)]
    assert as_lists[0] == as_lists[1]
    assert no_pad.pad_token is None


def test_train_mode_with_dropout_attributes_as_in_eval_and_is_restored(tokenizer) -> None:
    model = make_model("opt", dropout=0.5, attention_dropout=0.5)
    expected = hf_sparc.attribute(model, TEXTS, tokenizer=tokenizer, progress=False)
    model.train()
    grads = {n: p.requires_grad for n, p in model.named_parameters()}
    for _ in range(2):  # dropout would make two runs differ
        rel = hf_sparc.attribute(model, TEXTS, tokenizer=tokenizer, progress=False)
        assert all(torch.equal(rel[n], expected[n]) for n in rel)
    assert all(m.training for m in model.modules()), "train mode must be restored"
    assert grads == {n: p.requires_grad for n, p in model.named_parameters()}


def test_json_and_parquet_files_and_sliced_splits(tmp_path: Path, monkeypatch) -> None:
    rows = [{"text": f"text {i}", "n": i} for i in range(5)]
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "d.parquet"))
    (tmp_path / "d.json").write_text(json.dumps(rows))
    for name in ("d.parquet", "d.json"):
        assert load_texts(str(tmp_path / name)) == rows
    (tmp_path / "empty.json").write_text("[]")
    with pytest.raises(ValueError, match=r"empty\.json"):
        load_texts(str(tmp_path / "empty.json"))

    # built-in splits slice like datasets splits
    import hf_sparc.data.sources as sources

    monkeypatch.setattr(sources, "builtin_datasets", lambda: ["general"])
    monkeypatch.setattr(
        sources, "builtin_dataset", lambda name, split, seed: [f"{split}{i}" for i in range(10)]
    )
    assert load_texts("general:dev[:3]") == ["dev0", "dev1", "dev2"]
    assert load_texts("general:test[7:]") == ["test7", "test8", "test9"]
    with pytest.raises(ValueError, match="Bad split slice"):
        load_texts("general:dev[3]")

    # a datasets spec keeps its slice (a colon inside brackets is no separator)
    seen = {}
    table = datasets.Dataset.from_list(rows)
    monkeypatch.setattr(
        datasets, "load_dataset", lambda name, config, split: seen.update(split=split) or table
    )
    assert (
        load_texts("some/set::test[:200]:text") == [row["text"] for row in rows]
        and seen["split"] == "test[:200]"
    )
