"""User mistakes on the command line: exit code 2, one line on stderr, no traceback, and no output
that looks like a finished run."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from conftest import TEXTS, make_model, make_tokenizer

from hf_sparc.cli import main
from reliability.helpers import Saved


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    make_model("llama").save_pretrained(root / "model")
    make_tokenizer().save_pretrained(root / "model")
    (root / "general.txt").write_text("\n".join(TEXTS) + "\n")
    (root / "latin1.txt").write_bytes(b"the cat sat\ncaf\xe9 ran\n")
    (root / "blank.txt").write_text("\n   \n\t\n")
    assert main(["correct", "--model", str(root / "model"), "--general", str(root / "general.txt"),
                 "--count", "4", "--output", str(root / "run")]) == 0  # fmt: skip
    return root


def assert_one_error_line(err: str, pattern: str) -> None:
    """stderr holds exactly one error line, the last one, matching ``pattern``, and no traceback
    (transformers' "Loading weights" progress bar may precede it)."""
    lines = err.strip().splitlines()
    assert "Traceback" not in err and [line for line in lines if "error" in line.lower()] == lines[-1:], err
    assert re.search(pattern, lines[-1]), err


def _damaged_run(workspace: Path, tmp_path: Path, damage: Callable[[Path], None]) -> str:
    run = tmp_path / "damaged"
    shutil.copytree(workspace / "run", run)
    damage(run)
    return str(run)


def _pickle_only(run: Path) -> None:
    torch.save({"x": torch.zeros(1)}, run / "adapter_model.bin")
    (run / "adapter_model.safetensors").unlink()


def _truncate(name: str) -> Callable[[Path], None]:
    return lambda run: (run / name).write_bytes((run / name).read_bytes()[:100])


# (argv built from the workspace, the saved adapter for another model and a scratch folder; message)
MISTAKES: dict[str, tuple[Callable[[Path, Saved, Path], list[str]], str]] = {
    "non-UTF-8 texts": (
        lambda w, s, t: ["correct", "--general", str(w / "latin1.txt"), "--output", str(t / "out")],
        r"latin1\.txt is not UTF-8 text \(line 2\)",
    ),
    "blank texts": (
        lambda w, s, t: ["correct", "--undesired", str(w / "blank.txt"), "--output", str(t / "out")],
        "holds no texts",
    ),
    "non-UTF-8 eval set": (
        lambda w, s, t: [
            "correct",
            "--general",
            str(w / "general.txt"),
            "--eval",
            str(w / "latin1.txt"),
            "--output",
            str(t / "out"),
        ],
        "is not UTF-8",
    ),
    "adapter for another model": (
        lambda w, s, t: ["evaluate", "--adapter", str(s.adapter), "--texts", str(w / "general.txt")],
        "does not fit this 'llama' model",
    ),
    "truncated adapter": (
        lambda w, s, t: [
            "evaluate",
            "--texts",
            str(w / "general.txt"),
            "--adapter",
            _damaged_run(w, t, _truncate("adapter_model.safetensors")),
        ],
        "not a readable safetensors file",
    ),
    "pickled adapter": (
        lambda w, s, t: ["export", _damaged_run(w, t, _pickle_only), "--ia3", "--output", str(t / "out")],
        "safetensors only",
    ),
    "truncated masks": (
        lambda w, s, t: [
            "select",
            _damaged_run(w, t, _truncate("masks.safetensors")),
            "--count",
            "2",
            "--output",
            str(t / "out"),
        ],
        "not a readable safetensors masks file",
    ),
    "existing relevance file": (
        lambda w, s, t: ["attribute", "--method", "magnitude", "--output", str(w / "general.txt")],
        "--overwrite",
    ),
    "existing merged export": (
        lambda w, s, t: ["export", str(w / "run"), "--merged", "--output", str(w / "model")],
        "refusing to overwrite",
    ),
}


@pytest.mark.parametrize("mistake", list(MISTAKES))
def test_user_mistakes_exit_2_with_one_line_and_no_output(
    workspace: Path, saved: Saved, tmp_path: Path, capsys: pytest.CaptureFixture[str], mistake: str
) -> None:
    build, message = MISTAKES[mistake]
    before = {p: p.read_bytes() for p in workspace.rglob("*") if p.is_file()}
    argv = build(workspace, saved, tmp_path)
    assert main([*argv, "--model", str(workspace / "model")]) == 2
    assert_one_error_line(capsys.readouterr().err, message)
    # nothing written: no output folder, no staging debris, the workspace unchanged
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))
    assert {p: p.read_bytes() for p in workspace.rglob("*") if p.is_file()} == before


def test_failed_correct_never_leaves_a_report(
    workspace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run that fails after attribution (the count is too large for the selection) writes nothing
    that looks like a finished run."""
    out = tmp_path / "run"
    argv = ["correct", "--model", str(workspace / "model"), "--general", str(workspace / "general.txt")]
    assert main([*argv, "--count", "100000", "--output", str(out)]) == 2
    assert_one_error_line(capsys.readouterr().err, "count=100000 exceeds")
    assert not list(tmp_path.iterdir()), "a failed run left files behind"


def test_python_dash_m_entry_point_reports_one_line(workspace: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "hf_sparc.cli", "correct", "--model", str(workspace / "model"),
         "--general", str(workspace / "latin1.txt"), "--output", str(tmp_path / "run")],
        capture_output=True, text=True, check=False, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert result.returncode == 2
    assert_one_error_line(
        result.stderr, r"hf-sparc correct: error: .*latin1\.txt is not UTF-8 text \(line 2\)"
    )
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "argv",
    [
        lambda w: ["attribute", "--method", "magnitude", "--output", str(w / "rel.safetensors")],
        lambda w: ["export", str(w / "run"), "--merged", "--output", str(w / "merged")],
    ],
    ids=["attribute", "export --merged"],
)
def test_overwrite_flag_replaces_an_earlier_output(workspace: Path, argv) -> None:
    common = ["--model", str(workspace / "model")]
    assert main([*argv(workspace), *common]) == 0
    assert main([*argv(workspace), *common, "--overwrite"]) == 0
