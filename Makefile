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

# The PyTorch reference models of the equivalence tests (torchvision and timm, random
# weights: nothing is downloaded). Versions pinned in pyproject's `reference` extra.
$(VENV)/.reference: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet ".[reference]"
	touch $@

# One worker per core: most tests wait on XLA compiles and subprocesses, one at a time.
test: $(VENV)/.installed $(VENV)/.reference
	$(BIN)/pytest -n auto

# PyTorch's CPU wheel for the peer column; without it the harness skips PyTorch with a note.
TORCH_CPU ?= torch==2.13.0+cpu
$(VENV)/.bench: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet "$(TORCH_CPU)" \
		--extra-index-url https://download.pytorch.org/whl/cpu \
		|| echo "no PyTorch CPU wheel: the PyTorch peer is skipped"
	touch $@

bench: $(VENV)/.bench
	$(BIN)/python -m benchmarks.run

lint: $(VENV)/.installed
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy

clean:
	rm -rf $(VENV) runs build dist
