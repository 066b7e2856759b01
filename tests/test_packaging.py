"""The built wheel: what it holds, and that an install of it alone runs the default command."""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

from conftest import make_model, make_tokenizer

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_installs_and_runs_the_default_method(tmp_path):
    build = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "-q",
        "--no-deps",
        "--no-build-isolation",
        "-w",
        str(tmp_path),
    ]
    built = subprocess.run([*build, str(ROOT)], capture_output=True, text=True, check=False)
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("hf_sparc-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "hf_sparc_cli.py" in names and "hf_sparc/attribution/lrp/functions.py" in names
    assert any(n.endswith("licenses/LICENSE") for n in names)
    assert not any(n.startswith(("tests/", "benchmarks/", "examples/")) for n in names)
    sources = [zipfile.ZipFile(wheel).read(n).decode() for n in names if n.endswith(".py")]
    assert not any("import lxt" in text or 'find_spec("lxt")' in text for text in sources)  # lxt: tests only

    # a fresh environment that sees the installed stack (torch, transformers, peft; no lxt needed)
    # but not this checkout: the wheel's copy of hf_sparc must be the one that runs
    env_dir = tmp_path / "env"
    venv.create(env_dir, system_site_packages=True, with_pip=False)
    python = env_dir / "bin" / "python"
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", str(wheel)]
    assert subprocess.run(install, capture_output=True, text=True, check=False).returncode == 0
    where = subprocess.run([str(python), "-c", "import hf_sparc; print(hf_sparc.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path, check=True)  # fmt: skip
    assert where.stdout.startswith(str(env_dir)), where.stdout

    make_model("llama").save_pretrained(tmp_path / "model")
    make_tokenizer().save_pretrained(tmp_path / "model")
    (tmp_path / "undesired.txt").write_text("the cat sat on the mat\nthe dog ran\n")
    (tmp_path / "general.txt").write_text("a small dog and a big cat\nshe says it is not bad\n")
    command = [str(env_dir / "bin" / "hf-sparc"), "correct", "--model", str(tmp_path / "model"),
               "--undesired", str(tmp_path / "undesired.txt"), "--general", str(tmp_path / "general.txt"),
               "--count", "2", "--output", str(tmp_path / "run")]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "run" / "adapter_config.json").is_file()
