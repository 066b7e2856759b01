"""The built distributions: what they hold, and that a fresh environment installs the wheel and runs.

``python -m build`` makes the sdist and then the wheel *from the sdist* (so a file missing from the
sdist breaks the wheel too). The wheel goes into a virtual environment that sees nothing of this
one — its dependencies resolve through pip like a user's — and must pass ``pip check`` and run
``hf-sparc correct`` with the default method. torch is pinned to this environment's build so that
pip does not choose a multi-GB CUDA wheel.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import venv
import zipfile
from pathlib import Path

import pytest
import tomllib
import torch
from conftest import make_model, make_tokenizer

ROOT = Path(__file__).resolve().parent.parent


def _run(command, cwd, **kwargs):
    return subprocess.run(
        [str(c) for c in command], capture_output=True, text=True, cwd=cwd, check=False, **kwargs
    )


def _project_version() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


@pytest.fixture(scope="module")
def distributions(tmp_path_factory):
    """(sdist, wheel) built by ``python -m build`` from a copy of the checkout's tracked files."""
    out = tmp_path_factory.mktemp("dist")
    source = out / "source"
    listed = _run(["git", "ls-files", "-z"], ROOT)
    if listed.returncode != 0:
        pytest.fail(f"git ls-files failed: {listed.stderr}")
    for name in filter(None, listed.stdout.split("\0")):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            (source / name).write_bytes((ROOT / name).read_bytes())
    built = _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", out, source], out)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    (sdist,) = out.glob("hf_sparc-*.tar.gz")
    (wheel,) = out.glob("hf_sparc-*.whl")
    return sdist, wheel


def test_sdist_holds_the_sources_license_and_metadata(distributions):
    sdist, _ = distributions
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    for needed in ("pyproject.toml", "LICENSE", "README.md", "hf_sparc_cli.py", "hf_sparc/__init__.py",
                   "hf_sparc/attribution/lrp/functions.py", "hf_sparc/resources"):  # fmt: skip
        assert needed in names or any(n.startswith(needed + "/") for n in names), needed


def test_wheel_holds_the_package_and_no_lxt(distributions):
    _, wheel = distributions
    names = zipfile.ZipFile(wheel).namelist()
    assert "hf_sparc_cli.py" in names and "hf_sparc/attribution/lrp/functions.py" in names
    assert any(n.startswith("hf_sparc/resources/") for n in names)
    assert any(n.endswith("licenses/LICENSE") for n in names)
    assert not any(n.startswith(("tests/", "benchmarks/", "examples/")) for n in names)
    sources = [zipfile.ZipFile(wheel).read(n).decode() for n in names if n.endswith(".py")]
    assert not any("import lxt" in text or 'find_spec("lxt")' in text for text in sources)  # lxt: tests only


def test_fresh_environment_installs_the_wheel_passes_pip_check_and_corrects(distributions, tmp_path):
    sdist, wheel = distributions
    env_dir = tmp_path / "env"
    venv.create(env_dir, system_site_packages=False, with_pip=True)
    python = env_dir / "bin" / "python"
    install = _run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", wheel,
                    f"torch=={torch.__version__}"], tmp_path)  # fmt: skip
    assert install.returncode == 0, install.stderr[-3000:]
    where = _run([python, "-c", "import hf_sparc; print(hf_sparc.__file__)"], tmp_path)
    assert where.stdout.startswith(str(env_dir)), where.stdout + where.stderr
    checked = _run([python, "-m", "pip", "check"], tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert _run([python, "-c", "import lxt"], tmp_path).returncode != 0  # the default method works without it

    make_model("llama").save_pretrained(tmp_path / "model")
    make_tokenizer().save_pretrained(tmp_path / "model")
    (tmp_path / "undesired.txt").write_text("the cat sat on the mat\nthe dog ran\n")
    (tmp_path / "general.txt").write_text("a small dog and a big cat\nshe says it is not bad\n")
    command = [env_dir / "bin" / "hf-sparc", "correct", "--model", tmp_path / "model",
               "--undesired", tmp_path / "undesired.txt", "--general", tmp_path / "general.txt",
               "--count", "2", "--output", tmp_path / "run"]  # fmt: skip
    done = _run(command, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "run" / "adapter_config.json").is_file()

    # the sdist installs too (built from source in the same environment) and answers
    from_source = _run(
        [python, "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", sdist], tmp_path
    )
    assert from_source.returncode == 0, from_source.stderr[-2000:]
    version = _run([env_dir / "bin" / "hf-sparc", "--version"], tmp_path)
    assert version.returncode == 0 and _project_version() in version.stdout, version.stdout + version.stderr
