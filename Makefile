# Two entry points (see README): `make main` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Torch is installed first and pinned, so that no later requirement can pull another (CUDA) build.
TORCH := torch==2.13.0

.PHONY: setup setup-integration test test-slow test-integration test-export main bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e ".[offline,serve,dev]" $(TORCH)
	touch $@

# The fast suite and the integration tests (a real CodeTether server and PostgreSQL; skipped, with the reason,
# where PostgreSQL is not installed).
test: setup-integration
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m 'not slow and not export'

# The real CodeTether server (and PostgreSQL, which must be installed) for tests/integration: the server's
# dependencies are pinned to the working set in constraints/codetether.txt.
setup-integration: $(VENV)/.installed-integration

$(VENV)/.installed-integration: $(VENV)/.installed constraints/codetether.txt
	$(BIN)/python -m pip install --quiet -e ".[offline,serve,dev,integration]" -c constraints/codetether.txt $(TORCH)
	touch $@

test-integration: setup-integration
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m integration

test-slow: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m slow -s

# Exported GGUFs checked in llama.cpp itself (tests/test_export_llama.py). The llama extra compiles llama.cpp
# (about 4 minutes, once).
test-export: setup
	$(BIN)/python -m pip install --quiet -e ".[offline,serve,dev,llama]" $(TORCH)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m export

main: setup
	PATH="$(abspath $(BIN)):$$PATH" bash scripts/main_job.sh

bench: setup
	$(BIN)/python benchmarks/bench_train_step.py
	$(BIN)/python benchmarks/bench_latency.py

clean:
	rm -rf $(VENV) runs
