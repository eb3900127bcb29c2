# Tally: `make run` serves the demo; `make test` runs the whole suite. Both set up
# everything they need on a fresh machine.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PY := $(shell for p in python3.13 $$HOME/.pyenv/versions/3.13*/bin/python3.13; do \
	"$$p" -c 'import sys; assert sys.version_info[:2] == (3, 13)' >/dev/null 2>&1 && { echo "$$p"; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
PG_URL ?= postgres://postgres@127.0.0.1:5432/tally
TEST_REDIS_URL ?= redis://127.0.0.1:6379/0

.PHONY: help venv services chromium run test lint bench clean

help:
	@echo "make run    serve the demo at http://127.0.0.1:$(PORT)/ (web, worker, scheduler)"
	@echo "make test   ruff, mypy, the suite on PostgreSQL + Redis + Chromium, ledger tests on SQLite"
	@echo "make bench  the benchmarks, each beside its baseline"

$(BIN)/.installed: pyproject.toml
	@test -n "$(PY)" || { echo "Python 3.13 is required: put python3.13 on PATH or install it with pyenv (~/.pyenv/versions/3.13*)." >&2; exit 1; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q ".[dev]"
	touch $@

venv: $(BIN)/.installed

services:
	@command -v pg_ctlcluster >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; }
	@command -v redis-server >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; }
	@pg_isready -q -h 127.0.0.1 -p 5432 || pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start
	@for i in $$(seq 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
	@redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 || redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
	@for i in $$(seq 30); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 1; done

chromium:
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

run: venv
	$(BIN)/python manage.py migrate --noinput -v0
	$(BIN)/python manage.py seed_demo
	@echo
	@echo "Tally is starting at http://127.0.0.1:$(PORT)/  (Ctrl-C stops web, worker and scheduler)"
	PORT=$(PORT) SITE_URL=$${SITE_URL:-http://127.0.0.1:$(PORT)} $(BIN)/honcho start -f Procfile

lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy .

test: venv services chromium lint
	DATABASE_URL=$(PG_URL) REDIS_URL=$(TEST_REDIS_URL) $(BIN)/pytest -p no:cacheprovider --create-db
	@echo "--- the ledger tests again, on SQLite ---"
	DATABASE_URL=sqlite:///$(CURDIR)/var/ledger-tests.sqlite3 TEST_DATABASE_NAME=$(CURDIR)/var/test-ledger.sqlite3 \
		REDIS_URL=$(TEST_REDIS_URL) $(BIN)/pytest -p no:cacheprovider --create-db -m ledger

bench: venv services
	DATABASE_URL=$(PG_URL) REDIS_URL=$(TEST_REDIS_URL) $(BIN)/python -m bench

clean:
	rm -rf $(VENV) var staticfiles screenshots
