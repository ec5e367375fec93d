PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SOURCES := pyproject.toml $(shell find typedpipe examples -type f -not -path '*/__pycache__/*' 2>/dev/null)

.PHONY: run test bench lint clean

# Re-install only when the package or its config changed.
$(VENV)/.installed: $(SOURCES)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet ".[dev]"
	touch $@

run: $(VENV)/.installed
	$(BIN)/typedpipe train

# One worker per core: most tests wait on XLA compiles and subprocesses, one at a time.
test: $(VENV)/.installed
	$(BIN)/pytest -n auto

bench: $(VENV)/.installed
	$(BIN)/python -m benchmarks.run

lint: $(VENV)/.installed
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy

clean:
	rm -rf $(VENV) runs build dist
