# The two commands a new machine needs: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
ARGS ?=

.PHONY: run test lint bench system-deps clean

# uv resolves and installs in parallel (seconds instead of a minute and a half); pip stays the
# fallback so an install never depends on it.
INSTALL = { test -x $(BIN)/uv || $(BIN)/pip install --quiet uv; } && \
  $(BIN)/uv pip install --quiet --python $(BIN)/python

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
	  || { echo "Faultline needs Python >= 3.11 (found $$($(PYTHON) --version))"; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(INSTALL) -e . || $(BIN)/pip install --quiet -e .
	@touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(INSTALL) -e '.[test]' || $(BIN)/pip install --quiet -e '.[test]'
	@touch $@ $(VENV)/.installed

## run: create the virtualenv, install, start the embedded default (simulator + engine + API)
run: $(VENV)/.installed
	$(BIN)/faultline up $(ARGS)

## system-deps: Debian packages the tests drive for real (headless Chromium, Prometheus)
system-deps:
	@bash scripts/install-system-deps.sh

SERVICES ?= kafka kafka-cluster cassandra postgres mosquitto mosquitto-tls alertmanager

## test: install test extras and system packages, start the real services, run the whole suite
##       (the 40 slowest tests are listed at the end, to keep the suite inside its time budget)
##       (svc.py installs and starts the services, runs pytest against them, then stops them)
test: $(VENV)/.installed-test system-deps
	python3 scripts/services/svc.py run $(SERVICES) -- $(BIN)/pytest --durations=40 $(ARGS)

## lint: ruff, mypy and the layers of docs/ARCHITECTURE.md ([tool.importlinter] in pyproject.toml)
lint: $(VENV)/.installed-test
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy src
	PYTHONPATH=src $(BIN)/lint-imports --no-cache --no-logo

## bench: throughput, latency and memory figures, as ratios against in-process baselines
bench: $(VENV)/.installed-test
	@for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
