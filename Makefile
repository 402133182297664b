# Fresh machine with Python 3.11 (python3): `make test` or `make demo`. `make help` lists the targets.
SHELL := /bin/bash

PYTHON ?= python3
VENV ?= .venv
# make demo DEMO_DIR=/tmp/demo DEMO_ARGS="--preset smoke" (DEMO_ARGS go to `twm train`, after the defaults)
DEMO_DIR ?= runs/demo
DEMO_ARGS ?=
# make test PYTEST_ARGS="-x -k resume"
PYTEST_ARGS ?=
# make gpu-check GPU_CHECK_ARGS="--allow-cpu"
GPU_CHECK_ARGS ?=

.PHONY: help setup test demo gpu-check

help:
	@echo "make test       set up $(VENV) (if needed), then ruff + mypy + pytest + the docs build: exactly what CI (.ci/run) runs"
	@echo "make demo       set up $(VENV), train catch with the quick preset in $(DEMO_DIR) (resumed or"
	@echo "                skipped if already there), write $(DEMO_DIR)/dream.gif, print the final score"
	@echo "make setup      only create $(VENV) and install torch (CPU build unless a GPU is present) and"
	@echo "                twm with every extra; a no-op when nothing changed"
	@echo "make gpu-check  benchmarks/speed/gpu_check.sh: bench + a short Pong run on a CUDA GPU, gpu_check.md"
	@echo "variables: VENV=$(VENV) PYTHON=$(PYTHON) DEMO_DIR=$(DEMO_DIR) DEMO_ARGS=... PYTEST_ARGS=..."

setup:
	PYTHON=$(PYTHON) scripts/setup_venv.sh $(VENV)

test: setup
	scripts/run_tests.sh $(VENV) $(PYTEST_ARGS)

demo: setup
	scripts/demo.sh $(VENV) $(DEMO_DIR) $(DEMO_ARGS)

gpu-check: setup
	PYTHON=$(VENV)/bin/python benchmarks/speed/gpu_check.sh gpu_check.md $(GPU_CHECK_ARGS)
