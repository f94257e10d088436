# One entry point for every routine. `make run` and `make test` work on a fresh machine:
# they create .venv and install the project from pyproject.toml first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
COMPOSE ?= docker compose

.PHONY: install run test test-fast lint fmt check audit migrate bench up down logs-all shell-app shell-db shell-redis clean

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(INSTALLED)

install: $(INSTALLED)

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

up:
	$(COMPOSE) up --build -d

down:
	$(COMPOSE) down

logs-all:
	$(COMPOSE) logs -f

shell-app:
	$(COMPOSE) exec api bash

shell-db:
	$(COMPOSE) exec postgres sh -c 'psql -U "$$POSTGRES_USER" "$$POSTGRES_DB"'

shell-redis:
	$(COMPOSE) exec redis redis-cli

clean:
	-$(COMPOSE) down -v --remove-orphans
	rm -rf .mini-ledger .pytest_cache .ruff_cache .mypy_cache

bench: install  ## load test against pgbench's yardstick; writes bench/results/latest.{json,md}
	@command -v wrk >/dev/null || (apt-get install -y -qq wrk || (apt-get update -qq && apt-get install -y -qq wrk))
	$(BIN)/python bench/run.py $(BENCH_ARGS)
