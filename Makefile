# gpupool: `make demo` runs the pool on this machine; `make test` runs every test.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# scripts/setup.sh picks python3.11, 3.12, 3.13 or python3 (>= 3.11); PYTHON=... overrides.
export PYTHON
# extra pytest arguments, e.g. make test PYTEST_ARGS="-k cli -x"
PYTEST_ARGS ?=

.PHONY: setup demo test lint clean images

setup: $(STAMP)

# Re-run setup whenever the dependency list or the setup itself changes.
$(STAMP): pyproject.toml Makefile scripts/setup.sh deploy/images/requirements/core.txt deploy/images/requirements/runtime-cpu.txt
	bash scripts/setup.sh
	touch $@

demo: setup
	$(PY) scripts/demo.py

lint: setup
	$(VENV)/bin/lint-imports

test: setup
	$(MAKE) --no-print-directory lint
	$(VENV)/bin/pytest -q -p no:cacheprovider $(PYTEST_ARGS)

# container images (podman or docker): gpupool, gpupool-agent (+ -slim), gpupool-workload; cached.
# make images IMAGES="gpupool agent-slim" builds a subset (see deploy/images/build.sh).
images:
	nice -n 10 deploy/images/build.sh $(IMAGES)

clean:
	rm -rf $(VENV) test-artifacts .pytest_cache .gpupool-demo
