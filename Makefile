# wildswarm: the verbs users type. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?= $(CURDIR)/data
SEED ?= $(abspath $(CURDIR)/../shared/data/seed-examples)
PYTEST_ARGS ?=
# The Swarm stack (scripts/stack.sh reads these; see stack.yml for the rest).
STACK ?= wildswarm
N ?=
S ?=

export WILDSWARM_DATA := $(DATA)
export STACK

.PHONY: help venv browser test test-fast up down scale-workers ps logs e2e docker images images-offline \
        analyze-samples bench bench-pipeline bench-dispatch bench-jobstore bench-segments bench-profiles bench-fold bench-crops bench-startup broker db clean backup \
        restore

help: ## this list
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

$(BIN)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[pipeline,web,intake,export,dev]'
	$(BIN)/pip install -q --no-deps megadetector==10.0.28
	touch $@

venv: $(BIN)/.installed ## create the virtual environment with the ML stack (about 7 GB)

browser: ## install headless Chromium + chromedriver for the browser tests (Debian packages, if missing)
	bash scripts/browser-local.sh

broker: ## start a local RabbitMQ on 127.0.0.1 for the tests (installs it if missing)
	bash scripts/rabbitmq-local.sh

test: venv browser docker images ## install everything the tests need (Docker, Swarm, images too), then run the whole suite
	WILDSWARM_REQUIRE_DOCKER=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: venv ## only the tests that need no broker, job store, Docker, browser or models
	$(BIN)/python -m pytest -m "not broker and not db and not docker and not browser and not slow" $(PYTEST_ARGS)

docker: ## Docker Engine and a one-node Swarm on this machine, labelled for workers (installs and starts them if missing)
	bash scripts/docker-local.sh

images: docker ## build every image the stack uses (from Debian packages and PyPI where no registry answers)
	bash images/build.sh auto

images-offline: docker ## build every image from Debian packages and PyPI alone, RabbitMQ/Prometheus/node_exporter included
	bash images/build.sh offline

up: ## deploy the stack on this machine: Swarm, secrets, images, deploy, wait until healthy, print URLs
	bash scripts/stack.sh up

down: ## remove the stack (keeps ./data, secrets and volumes; PURGE=1 removes secrets and volumes too)
	bash scripts/stack.sh down

scale-workers: ## run N worker tasks: make scale-workers N=4
	bash scripts/stack.sh scale $(N)

ps: ## the stack's services and tasks
	@bash scripts/stack.sh ps

logs: ## a service's logs: make logs S=worker (proxy, web, producer, worker, rabbitmq, postgres, prometheus, ...)
	@bash scripts/stack.sh logs $(S)

backup: ## pg_dump of the job store into ./backups (BACKUP_DIR=...)
	@bash scripts/stack.sh backup

restore: ## restore the job store from a backup: make restore FILE=backups/wildswarm-jobs-<time>.dump
	@bash scripts/stack.sh restore "$(FILE)"

e2e: venv docker images ## end-to-end tests on a real one-node Swarm (deploys and removes a stack of its own)
	WILDSWARM_REQUIRE_DOCKER=1 $(BIN)/python -m pytest -m docker tests/e2e $(PYTEST_ARGS)

analyze-samples: venv ## analyse the seed videos into $(DATA)/output (WILDSWARM_UNTRAINED=1 without real weights)
	$(BIN)/wildswarm analyze $(SEED)/*.mp4 --out $(DATA)/output

bench: bench-pipeline bench-dispatch bench-jobstore bench-segments bench-profiles bench-fold bench-crops bench-startup ## run every benchmark

bench-pipeline: venv ## wildswarm's pipeline vs the old naive sequence vs bare forward passes
	$(BIN)/python -m bench.pipeline --videos $(SEED)

bench-dispatch: venv broker db ## broker round-trip overhead per job, 1/2/4 workers
	$(BIN)/python bench/dispatch.py

bench-segments: venv ## one long video in segments on 1/2/4/8 worker processes: speedup, merge share, a kill at 90 %
	$(BIN)/python bench/segments.py

bench-profiles: venv ## each analysis profile's memory and load time; the worker's pipeline cache vs a load per job
	$(BIN)/python bench/profiles.py

bench-fold: venv ## PyTorch's pose and classifier networks with batch norms folded into their convolutions vs unfolded
	$(BIN)/python bench/fold.py

bench-crops: venv ## the pose step with its crops cut on the model's device vs DeepLabCut's runner
	$(BIN)/python bench/crops.py

bench-startup: venv ## a restarted worker's start-up: model libraries imported module by module vs whole
	$(BIN)/python bench/startup.py

bench-jobstore: venv db ## the job store at a million jobs: list/filter p95, claims, polls, against JSON records
	$(BIN)/python bench/jobstore.py

db: ## start a local PostgreSQL on 127.0.0.1 for benchmarks and quick local runs (installs it if missing)
	bash scripts/postgres-local.sh

clean: ## remove caches (keeps the venv and ./data)
	rm -rf .pytest_cache build *.egg-info src/*.egg-info

# --- Cluster bootstrap: Ansible in beegfs/ and swarm/ (docs/cluster.md) ------------------
# make cluster INVENTORY=inventory/mysite/hosts.yml   (copy inventory/example first)
INVENTORY ?=
ANSIBLE_ARGS ?=
ANSIBLE_ENV := ANSIBLE_CONFIG=$(CURDIR)/ansible.cfg PATH="$(abspath $(BIN)):$$PATH"
CLUSTER_PLAYBOOKS := beegfs/site.yml beegfs/disks.yml beegfs/check.yml swarm/site.yml swarm/deploy.yml

.PHONY: cluster cluster-check lint-ansible ansible-venv

ansible-venv:
	@bash scripts/ansible-local.sh

cluster: ansible-venv ## servers in INVENTORY= -> cluster: disks, BeeGFS, Docker, Swarm, labels, stack
	@test -n "$(INVENTORY)" || { echo "usage: make cluster INVENTORY=inventory/<site>/hosts.yml (see docs/cluster.md)"; exit 2; }
	$(ANSIBLE_ENV) $(BIN)/ansible-playbook -i $(INVENTORY) $(ANSIBLE_ARGS) beegfs/site.yml swarm/site.yml

cluster-check: ansible-venv ## is /beegfs mounted on every node of INVENTORY=, and shared?
	@test -n "$(INVENTORY)" || { echo "usage: make cluster-check INVENTORY=inventory/<site>/hosts.yml"; exit 2; }
	$(ANSIBLE_ENV) $(BIN)/ansible-playbook -i $(INVENTORY) $(ANSIBLE_ARGS) beegfs/check.yml

lint-ansible: ansible-venv ## ansible-lint (production profile) and --syntax-check of the cluster playbooks
	$(ANSIBLE_ENV) $(BIN)/ansible-playbook --syntax-check -i inventory/example/hosts.yml $(CLUSTER_PLAYBOOKS)
	$(ANSIBLE_ENV) $(BIN)/ansible-lint --nocolor beegfs swarm inventory
