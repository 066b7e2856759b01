"""Scaling attribution: gradient checkpointing, offloaded models, frozen weights, bf16,
resumable runs (killed by SIGKILL and restarted) and several processes (torchrun, gloo)."""

from __future__ import annotations

import copy
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from conftest import TEXTS, make_model, make_tokenizer
from safetensors import safe_open

import hf_sparc

TESTS = Path(__file__).parent
TEXTS_16 = TEXTS * 2

# Run in subprocesses (killed, or launched by torchrun). Same tiny model, tokenizer, one thread
# and batch size as the in-process references, so results can be compared bit for bit.
WORKER = textwrap.dedent(
    """
    import sys, time
    import torch
    sys.path.insert(0, {tests!r})
    from conftest import TEXTS, make_model, make_tokenizer
    import hf_sparc

    torch.set_num_threads(1)
    mode, out = sys.argv[1], sys.argv[2]
    model, tokenizer = make_model("llama"), make_tokenizer()
    if mode == "slow":  # sleeps in every batch so that the parent can kill it mid-way
        model.model.register_forward_pre_hook(lambda *_: time.sleep(0.4))
        hf_sparc.attribute(model, TEXTS * 2, tokenizer=tokenizer, batch_size=1, progress=False,
                           checkpoint_dir=out, checkpoint_every=1)
    else:
        import torch.distributed as dist
        for method, level in {cases!r}:
            rel = hf_sparc.attribute(model, TEXTS * 2, tokenizer=tokenizer, method=method, level=level,
                                     batch_size=3, progress=False)
            if dist.get_rank() == 0:
                rel.save(f"{{out}}/{{method}}-{{level}}.safetensors")
        # leave together: a rank exiting while the other still holds gloo connections can abort
        dist.barrier()
        dist.destroy_process_group()
    """
)
DISTRIBUTED_CASES = [
    ("lrp", "neuron"),
    ("lrp", "weight"),
    ("cp-lrp", "head"),
    ("lrp", "token"),
    ("wanda", "weight"),
]


def _worker(tmp_path: Path) -> Path:
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(tests=str(TESTS), cases=DISTRIBUTED_CASES))
    return script


def _assert_identical(a: hf_sparc.Relevance, b: hf_sparc.Relevance) -> None:
    assert set(a) == set(b)
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert a.info.outputs == b.info.outputs


def _same_masks(a, b) -> bool:
    return set(a) == set(b) and all(torch.equal(a[name], b[name]) for name in a)


def _counting_forwards(model) -> list[int]:
    calls: list[int] = []
    model.model.register_forward_pre_hook(lambda *_: calls.append(1))
    return calls


# -- memory options --------------------------------------------------------------------------------
@pytest.mark.parametrize("level", ["neuron", "weight", "head", "token"])
def test_gradient_checkpointing_gives_identical_relevance(level, tokenizer):
    model = make_model("llama")
    plain = hf_sparc.attribute(model, TEXTS, tokenizer=tokenizer, level=level, batch_size=3)
    checkpointed = hf_sparc.attribute(
        model, TEXTS, tokenizer=tokenizer, level=level, batch_size=3, gradient_checkpointing=True
    )
    _assert_identical(plain, checkpointed)
    assert all("forward" not in layer.__dict__ for layer in model.model.layers)  # shadow removed


@pytest.mark.parametrize("level", ["neuron", "weight"])
def test_no_parameter_gets_a_gradient(level, tokenizer):
    model = make_model("llama")
    seen = []
    model.model.register_forward_pre_hook(
        lambda *_: seen.append([p.requires_grad for p in model.parameters()])
    )
    hf_sparc.attribute(model, TEXTS, tokenizer=tokenizer, level=level)
    assert seen and not any(any(flags) for flags in seen)  # frozen during attribution
    assert all(p.grad is None and p.requires_grad for p in model.parameters())  # restored, no grads


def test_bf16_model_with_checkpointing_keeps_fp32_scores(tokenizer):
    model = make_model("llama", dtype=torch.bfloat16)
    rel = hf_sparc.attribute(model, TEXTS, tokenizer=tokenizer, gradient_checkpointing=True)
    reference = hf_sparc.attribute(copy.deepcopy(model).float(), TEXTS, tokenizer=tokenizer)
    for name in rel:
        assert rel[name].dtype == torch.float32
        cosine = torch.nn.functional.cosine_similarity(rel[name], reference[name], dim=0)
        assert cosine > 0.95


# -- offloaded / dispatched models -----------------------------------------------------------------
@pytest.mark.parametrize("offload", ["cpu", "disk"])
@pytest.mark.parametrize(
    ("method", "level"),
    [("lrp", "neuron"), ("lrp", "weight"), ("lrp", "head"), ("wanda", "weight"), ("magnitude", "neuron")],
)
def test_offloaded_model_attributes_like_the_plain_model(offload, method, level, tokenizer, tmp_path):
    from accelerate import cpu_offload, disk_offload

    model = make_model("llama")
    plain = hf_sparc.attribute(model, TEXTS, tokenizer=tokenizer, method=method, level=level)
    hooked = copy.deepcopy(model)
    if offload == "cpu":
        cpu_offload(hooked, execution_device="cpu")
    else:
        disk_offload(hooked, offload_dir=str(tmp_path), execution_device="cpu")
    assert hooked.model.layers[0].mlp.up_proj.weight.device.type == "meta"
    offloaded = hf_sparc.attribute(hooked, TEXTS, tokenizer=tokenizer, method=method, level=level)
    for name in plain:
        torch.testing.assert_close(offloaded[name], plain[name], rtol=1e-5, atol=1e-7)
    assert hooked.model.layers[0].mlp.up_proj.weight.device.type == "meta"  # hooks untouched


def test_meta_weights_without_offload_hooks_are_refused(tokenizer):
    model = make_model("llama")
    model.model.layers[0].mlp.up_proj.to("meta")
    with pytest.raises(ValueError, match="meta"):
        hf_sparc.attribute(model, TEXTS, tokenizer=tokenizer)


# -- resumable runs ----------------------------------------------------------------------------------
def _checkpoint_meta(path: Path) -> dict:
    import json

    with safe_open(str(path), framework="pt") as handle:
        return json.loads(handle.metadata()["hf_sparc.attribution_checkpoint"])


def test_run_killed_by_sigkill_resumes_bit_identically(tmp_path, tokenizer):
    state_dir = tmp_path / "state"
    process = subprocess.Popen([sys.executable, str(_worker(tmp_path)), "slow", str(state_dir)])
    state_file = state_dir / "attribution-rank0-of-1.safetensors"
    try:
        deadline = time.monotonic() + 50
        while not (state_file.is_file() and _checkpoint_meta(state_file)["done"] >= 2):
            assert process.poll() is None, "the worker ended before it could be killed"
            assert time.monotonic() < deadline, "no checkpoint written"
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait(timeout=30)
    done = _checkpoint_meta(state_file)["done"]
    assert 2 <= done < len(TEXTS_16)

    model = make_model("llama")
    calls = _counting_forwards(model)
    kwargs = dict(tokenizer=tokenizer, batch_size=1, progress=False)
    resumed = hf_sparc.attribute(model, TEXTS_16, checkpoint_dir=state_dir, checkpoint_every=1, **kwargs)
    assert len(calls) == len(TEXTS_16) - done  # only the unfinished batches ran
    _assert_identical(resumed, hf_sparc.attribute(make_model("llama"), TEXTS_16, **kwargs))


def test_finished_checkpoint_is_reused_and_other_runs_are_refused(tmp_path, tokenizer):
    model = make_model("llama")
    calls = _counting_forwards(model)
    first = hf_sparc.attribute(model, TEXTS, tokenizer=tokenizer, batch_size=3, checkpoint_dir=tmp_path)
    again = hf_sparc.attribute(model, TEXTS, tokenizer=tokenizer, batch_size=3, checkpoint_dir=tmp_path)
    assert len(calls) == 3  # ceil(8 / 3) batches, all in the first call
    _assert_identical(first, again)
    with pytest.raises(ValueError, match="different attribution run"):
        hf_sparc.attribute(model, TEXTS[:5], tokenizer=tokenizer, batch_size=3, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="different attribution run"):
        hf_sparc.attribute(model, TEXTS, tokenizer=tokenizer, level="head", checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="checkpoint_every"):
        hf_sparc.attribute(model, TEXTS, tokenizer=tokenizer, checkpoint_dir=tmp_path, checkpoint_every=0)


def test_checkpoint_files_are_replaced_atomically(tmp_path, tokenizer):
    hf_sparc.attribute(
        make_model("llama"), TEXTS, tokenizer=tokenizer, checkpoint_dir=tmp_path, checkpoint_every=1
    )
    assert [p.name for p in tmp_path.iterdir()] == ["attribution-rank0-of-1.safetensors"]  # no temp files


# -- several processes -----------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_processes_equal_one_process_and_give_identical_masks(tmp_path, tokenizer):
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}",
        str(_worker(tmp_path)),
        "distributed",
        str(out),
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    model = make_model("llama")
    for method, level in DISTRIBUTED_CASES:
        single = hf_sparc.attribute(
            model, TEXTS_16, tokenizer=tokenizer, method=method, level=level, batch_size=3
        )
        sharded = hf_sparc.Relevance.load(out / f"{method}-{level}.safetensors")
        assert sharded.info.n_samples == single.info.n_samples
        assert sharded.info.outputs == pytest.approx(single.info.outputs, rel=1e-6)
        for name in single:
            torch.testing.assert_close(
                sharded[name], single[name], rtol=1e-6, atol=1e-6 * float(single[name].abs().max())
            )
        if level != "token":
            for count in (1, 5, single.numel() // 3):
                assert _same_masks(
                    hf_sparc.select(sharded, count=count), hf_sparc.select(single, count=count)
                )
    general = hf_sparc.Relevance.load(out / "lrp-neuron.safetensors")
    undesired = hf_sparc.attribute(model, TEXTS[:3], tokenizer=tokenizer)
    single_general = hf_sparc.attribute(model, TEXTS_16, tokenizer=tokenizer, batch_size=3)
    assert _same_masks(
        hf_sparc.select_contrastive(undesired=undesired, general=general, count=7),
        hf_sparc.select_contrastive(undesired=undesired, general=single_general, count=7),
    )


def test_distributed_true_without_processes_fails_clearly(tokenizer):
    with pytest.raises(ValueError, match="process group"):
        hf_sparc.attribute(make_model("llama"), TEXTS, tokenizer=make_tokenizer(), distributed=True)


# -- configuration -----------------------------------------------------------------------------------
def test_sparc_config_passes_scaling_options_and_checkpoints_each_reference_set(tmp_path, tokenizer):
    config = hf_sparc.SparcConfig(
        count=3, gradient_checkpointing=True, checkpoint_dir=tmp_path, checkpoint_every=2
    )
    assert config.checkpoint_dir == str(tmp_path)  # JSON-safe
    assert hf_sparc.SparcConfig.from_dict(config.to_dict()) == config
    pruner = hf_sparc.SparcPruner(config).fit(
        make_model("llama"), tokenizer, undesired=TEXTS[:3], general=TEXTS
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["general", "undesired"]
    plain = hf_sparc.attribute(make_model("llama"), TEXTS, tokenizer=tokenizer)
    _assert_identical(pruner.relevance["general"], plain)


@pytest.mark.parametrize(
    "bad",
    [
        {"checkpoint_every": 0},
        {"checkpoint_every": 1.5},
        {"gradient_checkpointing": "yes"},
        {"checkpoint_dir": 3},
    ],
)
def test_sparc_config_rejects_bad_scaling_options(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        hf_sparc.SparcConfig(**bad)


def test_cli_scaling_options_reach_attribute(tmp_path, tokenizer):
    import argparse

    from hf_sparc.cli._common import add_scaling_options, scaling_options

    parser = argparse.ArgumentParser()
    add_scaling_options(parser)
    options = scaling_options(
        parser.parse_args(
            ["--gradient-checkpointing", "--checkpoint-dir", str(tmp_path), "--max-memory", "4GB"]
        )
    )
    assert options == {
        "gradient_checkpointing": True,
        "checkpoint_dir": str(tmp_path),
        "checkpoint_every": 10,
        "max_memory": "4GB",
    }
    hf_sparc.attribute(make_model("llama"), TEXTS, tokenizer=tokenizer, **options)
    assert (tmp_path / "attribution-rank0-of-1.safetensors").is_file()
