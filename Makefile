# riskstream: the two commands a fresh machine needs are `make demo` and `make test`.
# Everything they depend on (Python packages, Kafka jars from Maven Central, Debian's
# redis-server) is installed by the `setup` target; nothing is assumed to be there already.

SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: demo test setup setup-test lint clean

$(VENV)/.installed: pyproject.toml ops/constraints.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), f"riskstream needs Python 3.11, $(PYTHON) is {sys.version.split()[0]}"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# constraints.txt pins the whole tested environment, transitive packages included.
	$(BIN)/pip install --quiet --constraint ops/constraints.txt --editable ".[dev]"
	@touch $@

setup: $(VENV)/.installed
	$(BIN)/riskstream dev install

setup-test: $(VENV)/.installed
	$(BIN)/riskstream dev install --test-tools

## Run the main job on the embedded default: local Kafka + Redis, a small model,
## synthetic traffic streaming in, alerts printed as they arrive. Ctrl-C stops it all.
demo: setup
	$(BIN)/riskstream demo

## The whole test suite, integration tests included (they start their own broker and Redis).
test: setup-test lint
	@set +e; $(BIN)/python -m pytest $(PYTEST_ARGS); status=$$?; set -e; \
	if [ $$status -eq 5 ]; then \
		echo "pytest collected no tests: the suite is broken, failing on purpose" >&2; exit 1; \
	fi; exit $$status

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# Stops the dev servers and removes this checkout's caches. The state under RISKSTREAM_HOME
# (default ~/.riskstream: jars, the model registry, runs) is kept; delete it by hand if wanted.
clean:
	$(BIN)/riskstream dev down || true
	rm -rf .riskstream .pytest_cache .mypy_cache .ruff_cache .import_linter_cache
