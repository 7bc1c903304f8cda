# Every target creates and uses .venv by itself: nothing is installed by hand.
# `make demo` installs cfstream alone (what a user gets from `pip install .`); test, lint, bench
# and soak add the dev, gdrive, bench and Ray extras and contextframe (a much larger install).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
BASE_STAMP := $(VENV)/.installed-base
STAMP := $(VENV)/.installed-dev
# contextframe 0.1.1 declares a dependency on `lance` (an unrelated PyPI package, not pylance)
# that breaks `import contextframe`; install it without dependencies plus what it really imports.
CONTEXTFRAME := contextframe==0.1.1
CONTEXTFRAME_DEPS := jsonschema numpy

.PHONY: demo test lint format typecheck bench bench-quick soak clean venv

venv: $(STAMP)

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH (Python 3.11+)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# the package and its runtime dependencies only: all `cfstream demo` needs
$(BASE_STAMP): pyproject.toml Makefile | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $(BASE_STAMP)

# everything the tests, lint, type checks and benchmarks use
$(STAMP): pyproject.toml Makefile | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev,gdrive,bench,ray]'
	$(BIN)/python -m pip install -q --no-deps $(CONTEXTFRAME)
	$(BIN)/python -m pip install -q $(CONTEXTFRAME_DEPS)
	touch $(STAMP) $(BASE_STAMP)

demo: $(BASE_STAMP)
	$(BIN)/cfstream demo

lint: $(STAMP)
	$(BIN)/ruff check cfstream tests benchmarks examples
	$(BIN)/ruff format --check cfstream tests benchmarks examples
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format cfstream tests benchmarks examples
	$(BIN)/ruff check --fix cfstream tests benchmarks examples

typecheck: $(STAMP)
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run

bench-quick: $(STAMP)
	$(BIN)/python -m benchmarks.run --quick

soak: $(STAMP)
	CFSTREAM_SOAK=1 $(BIN)/python -m pytest -q tests/reliability

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache demo.lance build *.egg-info
