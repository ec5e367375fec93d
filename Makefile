PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SOURCES := pyproject.toml $(shell find typedpipe examples -type f -not -path '*/__pycache__/*' 2>/dev/null)

.PHONY: run test test-slow bench lint clean

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
# loadgroup: tests marked with one xdist_group run on one worker, in order (the README's).
test: $(VENV)/.installed $(VENV)/.reference
	$(BIN)/pytest -n auto --dist loadgroup -m "not slow"

# The ImageNet-sized models' compiled steps and equivalence runs (tests/conftest.py's
# SLOW_MODELS): about 15 minutes more on 2 cores.
test-slow: $(VENV)/.installed $(VENV)/.reference
	$(BIN)/pytest -n auto -m slow

# The peers' frameworks, the [bench] extra: PyTorch (its CPU wheels where that index answers)
# with the torchvision built for that torch, timm and Keras. Without them the harness skips
# those peers with a note.
TORCH ?= torch==2.14.1 torchvision==0.29.1
$(VENV)/.bench: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet $(TORCH) ".[bench]" \
		--extra-index-url https://download.pytorch.org/whl/cpu \
		|| echo "the [bench] extra did not install: the peers it brings are skipped"
	touch $@

bench: $(VENV)/.bench
	$(BIN)/python -m benchmarks.run

lint: $(VENV)/.installed
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy

clean:
	rm -rf $(VENV) runs build dist
