# Everything from a fresh clone: `make demo`, `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: all install demo test lint layers typecheck proto bench bench-sf1 clean

all: install

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev,all,bench]"
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/fedsql demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy src/fedsql connectors
	$(BIN)/python scripts/lint_imports.py  # import-linter: the layers (pyproject.toml)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile tests  # two workers: a file's tests stay together

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check src connectors tests

layers: $(STAMP)
	$(BIN)/python scripts/lint_imports.py

typecheck: $(STAMP)
	$(BIN)/mypy src/fedsql connectors

# Regenerate the committed gRPC code from proto/ (needs the dev extra).
proto: $(STAMP)
	PYTHON=$(BIN)/python scripts/gen_proto.sh

bench: $(STAMP)
	$(BIN)/fedsql bench tpch --sf 0.1 --json benchmarks/results/tpch-sf0.1.json

bench-sf1: $(STAMP)
	$(BIN)/fedsql bench tpch --sf 1 --json benchmarks/results/tpch-sf1.json

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .ruff_cache .mypy_cache
