"""The tuner sits below the workflows: nothing in ``hf_sparc.tuner`` imports ``hf_sparc.workflows``.

``import hf_sparc`` loads every module (the public API is flat), so the check stands in a bare
``hf_sparc`` package whose ``__init__`` does not run: what the tuner modules pull in themselves is
what lands in ``sys.modules``. Imports inside functions only run when called, so they are checked
in the source as well.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "hf_sparc"
TUNER_MODULES = sorted(
    "hf_sparc.tuner" + ("" if path.stem == "__init__" else f".{path.stem}")
    for path in (PACKAGE / "tuner").glob("*.py")
)

SCRIPT = """
import importlib, json, sys, types
root = types.ModuleType("hf_sparc")
root.__path__ = [sys.argv[1]]
sys.modules["hf_sparc"] = root  # a bare package: hf_sparc/__init__.py (which loads everything) never runs
for name in json.loads(sys.argv[2]):
    importlib.import_module(name)
print(json.dumps(sorted(m for m in sys.modules if m.startswith("hf_sparc."))))
"""


def test_tuner_modules_load_no_workflow() -> None:
    assert {"hf_sparc.tuner.io", "hf_sparc.tuner.hub", "hf_sparc.tuner.enforce"} <= set(TUNER_MODULES)
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(PACKAGE), json.dumps(TUNER_MODULES)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.splitlines()[-1])
    assert set(TUNER_MODULES) <= set(loaded)
    assert [m for m in loaded if m.startswith("hf_sparc.workflows")] == []


def test_tuner_source_names_no_workflow() -> None:
    """Lazy imports included (they run only when their function is called)."""
    offenders = []
    for path in sorted((PACKAGE / "tuner").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            offenders += [f"{path.name}:{node.lineno}" for n in names if n.startswith("hf_sparc.workflows")]
    assert offenders == []
