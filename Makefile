# The two quick-start commands do all set-up themselves: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: demo test bench lint fmt clean install

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e .
	touch $@

$(DEV_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,bench]'
	touch $@ $(RUN_STAMP)

install: $(RUN_STAMP)

demo: $(RUN_STAMP)
	$(BIN)/triage demo

test: $(DEV_STAMP)
	$(BIN)/python -m pytest -q

bench: $(DEV_STAMP)
	$(BIN)/python bench/pipeline.py
	$(BIN)/python bench/loghub.py --data ../shared/loghub2k
	$(BIN)/python bench/throughput.py

lint: $(DEV_STAMP)
	$(BIN)/ruff check triage connectors tests bench
	$(BIN)/mypy

fmt: $(DEV_STAMP)
	$(BIN)/ruff check --fix triage connectors tests bench

clean:
	rm -rf $(VENV) .triage .pytest_cache .mypy_cache .ruff_cache .hypothesis
