# gpupool: `make demo` runs the pool on this machine; `make test` runs every test.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile scripts/setup.sh
	PYTHON=$(PYTHON) bash scripts/setup.sh
	touch $@

demo: setup
	$(PY) scripts/demo.py

lint: setup
	$(VENV)/bin/lint-imports

test: setup lint
	$(VENV)/bin/pytest -q -p no:cacheprovider $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) test-artifacts .pytest_cache
