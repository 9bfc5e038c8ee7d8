# Every target creates .venv on first use, so a fresh clone needs only `make run` or `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint format test-faults docs clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/systemprompt scheduler:serve --demo

lint: $(STAMP)
	$(BIN)/ruff check scheduler workers cli tests bench
	$(BIN)/ruff format --check scheduler workers cli tests bench
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format scheduler workers cli tests bench
	$(BIN)/ruff check --fix scheduler workers cli tests bench

test: $(STAMP) lint
	$(BIN)/pytest -q -m "not slow"

test-faults: $(STAMP)
	$(BIN)/pytest -q tests/faults

docs: $(STAMP)
	$(BIN)/python -m cli.docgen

clean:
	rm -rf $(VENV) .scheduler .mypy_cache .ruff_cache .pytest_cache
