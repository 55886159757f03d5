# wildswarm: the verbs users type. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?= $(CURDIR)/data
SEED ?= $(abspath $(CURDIR)/../shared/data/seed-examples)
PYTEST_ARGS ?=

export WILDSWARM_DATA := $(DATA)

.PHONY: help venv test test-fast up analyze-samples bench bench-pipeline bench-dispatch broker clean

help: ## this list
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

$(BIN)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[pipeline,web,dev]'
	touch $@

venv: $(BIN)/.installed ## create the virtual environment with the ML stack (about 7 GB)

broker: ## start a local RabbitMQ on 127.0.0.1 for the tests (installs it if missing)
	bash scripts/rabbitmq-local.sh

test: venv broker ## install everything the tests need, then run the whole suite
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: venv ## only the tests that need no broker, Docker, browser or models
	$(BIN)/python -m pytest -m "not broker and not docker and not browser and not slow" $(PYTEST_ARGS)

up: analyze-samples ## bring wildswarm up on this machine (until the Swarm stack lands: analyse the sample videos)

analyze-samples: venv ## analyse the seed videos into $(DATA)/output (WILDSWARM_UNTRAINED=1 without real weights)
	$(BIN)/wildswarm analyze $(SEED)/*.mp4 --out $(DATA)/output

bench: bench-pipeline bench-dispatch ## run every benchmark

bench-pipeline: venv ## wildswarm's pipeline vs the old naive sequence vs bare forward passes
	$(BIN)/python bench/pipeline.py --videos $(SEED)

bench-dispatch: venv broker ## broker round-trip overhead per job, 1/2/4 workers
	$(BIN)/python bench/dispatch.py

clean: ## remove caches (keeps the venv and ./data)
	rm -rf .pytest_cache build *.egg-info src/*.egg-info
