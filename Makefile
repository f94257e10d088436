# One entry point for every routine. `make run` and `make test` work on a fresh machine:
# they create .venv and install the locked dependencies (requirements/dev.txt) and the project first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
# Docker Compose v2 (the `docker compose` plugin) or v1 (`docker-compose`), whichever exists;
# COMPOSE=... overrides. Found only when a compose target runs.
COMPOSE ?= $(shell if docker compose version >/dev/null 2>&1; then echo docker compose; \
	elif command -v docker-compose >/dev/null 2>&1; then echo docker-compose; fi)

.PHONY: install lock run test test-fast lint fmt check audit migrate bench bench-audit bench-webhooks up down logs-all shell-app shell-db shell-redis clean compose

# Exact versions with hashes from the lock (runtime + zero-config + dev tools), then the project
# itself, editable and without dependencies. Again whenever the lock or pyproject.toml changes.
$(INSTALLED): pyproject.toml $(wildcard requirements/*.txt)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --require-hashes -r requirements/dev.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(INSTALLED)

install: $(INSTALLED)

# requirements/{dev,zero-config,runtime}.txt from pyproject.toml. Keeps every pin it can; move
# them with LOCK_ARGS=--upgrade (all) or LOCK_ARGS='--upgrade-package fastapi' (one).
# runtime and zero-config are constrained by dev, so every file names the same versions.
LOCK := $(BIN)/uv pip compile pyproject.toml --quiet --generate-hashes --universal \
	--python-version 3.11 --custom-compile-command 'make lock'

lock: install
	$(LOCK) --extra zero-config --extra dev $(LOCK_ARGS) -o requirements/dev.txt
	$(LOCK) --extra zero-config -c requirements/dev.txt -o requirements/zero-config.txt
	$(LOCK) -c requirements/dev.txt -o requirements/runtime.txt

run: install  ## API :8000, worker, beat, Flower :5555; embedded PostgreSQL/Redis unless configured
	$(BIN)/mini-ledger run

test: install  ## the whole suite; configured servers if the environment names them, else embedded
	$(BIN)/python -m pytest

test-fast: install  ## unit tests only: no PostgreSQL, Redis or worker; seconds
	$(BIN)/python -m pytest -m unit

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

fmt: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

check: lint test

migrate: install
	$(BIN)/mini-ledger migrate

audit: install  ## every ledger invariant, checked from the database
	$(BIN)/mini-ledger audit

# Fails with one clear line when neither Compose exists.
compose:
	@test -n "$(COMPOSE)" || { echo "Docker Compose not found: install the Docker Compose plugin ('docker compose', v2) or docker-compose (v1), or set COMPOSE to its command" >&2; exit 1; }

up: compose
	$(COMPOSE) up --build -d

down: compose
	$(COMPOSE) down

logs-all: compose
	$(COMPOSE) logs -f

shell-app: compose
	$(COMPOSE) exec api bash

shell-db: compose
	$(COMPOSE) exec postgres sh -c 'psql -U "$$POSTGRES_USER" "$$POSTGRES_DB"'

shell-redis: compose
	$(COMPOSE) exec redis redis-cli

clean:  ## compose's containers and volumes (if Compose exists), then the local state
	$(if $(COMPOSE),-$(COMPOSE) down -v --remove-orphans)
	rm -rf .mini-ledger .pytest_cache .ruff_cache .mypy_cache

bench: install  ## load test against pgbench's yardstick; writes bench/results/latest.{json,md}
	@command -v wrk >/dev/null || (apt-get install -y -qq wrk || (apt-get update -qq && apt-get install -y -qq wrk))
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# A ledger of 1,000,000 transfers (BENCH_AUDIT_ARGS='--transfers 100000' for fewer) built with SQL
# in its own database, then `mini-ledger audit` timed; writes bench/results/audit.{json,md}.
bench-audit: install  ## how long the audit takes on 1,000,000 transfers (SPEC: within 10 s)
	$(BIN)/python bench/audit.py $(BENCH_AUDIT_ARGS)

# A burst of 10,000 transfers (BENCH_WEBHOOKS_ARGS='--transfers 1000' for fewer), one webhook
# endpoint, a receiver answering 204: every event must arrive once; bench/results/webhooks.*.
bench-webhooks: install  ## how long the webhooks of 10,000 transfers take to arrive, none lost
	$(BIN)/python bench/webhooks.py $(BENCH_WEBHOOKS_ARGS)
