# The two quick-start commands do all set-up themselves: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: demo test bench lint fmt clean install model

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

# The real local model (llama.cpp server + Qwen2.5-Coder-1.5B, ~1.1 GB, cached: a second run downloads nothing).
model: $(RUN_STAMP)
	$(BIN)/python scripts/install_model.py

# The suite includes one end-to-end test against the real local model, so the model is installed first.
test: $(DEV_STAMP) model
	$(BIN)/python -m pytest -q

bench: $(DEV_STAMP) model
	$(BIN)/python bench/pipeline.py
	$(BIN)/python bench/loghub.py --data ../shared/loghub2k
	$(BIN)/python bench/throughput.py
	$(BIN)/python bench/latency.py
	$(BIN)/python bench/kafka.py
	$(BIN)/python bench/lane.py
	$(BIN)/python bench/kafka_workers.py

lint: $(DEV_STAMP)
	$(BIN)/ruff check triage connectors tests bench
	$(BIN)/mypy

fmt: $(DEV_STAMP)
	$(BIN)/ruff check --fix triage connectors tests bench

clean:
	rm -rf $(VENV) .triage .pytest_cache .mypy_cache .ruff_cache .hypothesis
