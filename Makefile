# Tally: `make run` serves the demo; `make test` runs the whole suite. Both set up
# everything they need on a fresh machine.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PY := $(shell for p in python3.13 $$HOME/.pyenv/versions/3.13*/bin/python3.13; do \
	"$$p" -c 'import sys; assert sys.version_info[:2] == (3, 13)' >/dev/null 2>&1 && { echo "$$p"; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
# The machine's PostgreSQL (make test and make bench); make run and, where that does not
# answer, make test use the embedded one (scripts/embedded_pg.py, var/postgres).
PG_URL ?= postgres://postgres@127.0.0.1:5432/tally
TEST_REDIS_URL ?= redis://127.0.0.1:6379/0
EMBEDDED_PG := $(BIN)/python scripts/embedded_pg.py
PG_ANSWERS = $(BIN)/python -c 'import sys, psycopg; psycopg.connect(sys.argv[1], dbname="postgres", connect_timeout=3).close()' $(PG_URL) 2>/dev/null
PYTEST := $(BIN)/pytest -p no:cacheprovider --create-db
comma := ,

.PHONY: help venv services machine-postgres chromium pdf-libraries run serve test lint bench screenshots clean

help:
	@echo "make run    serve the demo at http://127.0.0.1:$(PORT)/ (web, worker, scheduler; PostgreSQL:"
	@echo "            DATABASE_URL's, else an embedded one in var/postgres, stopped with the rest)"
	@echo "make test   ruff, mypy, the suite on PostgreSQL (the machine's, else the embedded one),"
	@echo "            Redis and Chromium"
	@echo "make bench  the benchmarks, each beside its baseline"
	@echo "make screenshots  every page at 390 and 1280 px, as each demo plan's manager and member,"
	@echo "            in var/screenshots/ for review"

$(BIN)/.installed: pyproject.toml
	@test -n "$(PY)" || { echo "Python 3.13 is required: put python3.13 on PATH or install it with pyenv (~/.pyenv/versions/3.13*)." >&2; exit 1; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q ".[dev]"
	touch $@

venv: $(BIN)/.installed

# Redis, installed and started when missing; the machine's PostgreSQL started when it is
# installed but down (never installed here: without one, make test uses the embedded one).
services:
	@command -v redis-server >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; }
	@if command -v pg_ctlcluster >/dev/null && ls /etc/postgresql/*/main >/dev/null 2>&1 && ! pg_isready -q -h 127.0.0.1 -p 5432; then \
		for v in $$(ls /etc/postgresql); do pg_ctlcluster --skip-systemctl-redirect $$v main start || true; done; \
		for i in $$(seq 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done; \
	fi
	@redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 || redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
	@for i in $$(seq 30); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 1; done

# make bench measures the machine's PostgreSQL: installed from Debian when missing.
machine-postgres:
	@command -v pg_ctlcluster >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; }

chromium:
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

# What WeasyPrint (the invoice PDFs) needs from the system: Pango and a font, installed when
# missing.
PDF_PACKAGES := libpango-1.0-0 libpangoft2-1.0-0 fonts-dejavu-core
pdf-libraries:
	@dpkg -s $(PDF_PACKAGES) >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(PDF_PACKAGES); }

# Without DATABASE_URL, `serve` runs inside embedded_pg.py's `run`, which starts the embedded
# PostgreSQL, and stops it once Ctrl-C has stopped web, worker and scheduler.
# (SERVE, not $(MAKE) itself, in the recipe: `make -n run` then starts no server.)
SERVE = $(MAKE) --no-print-directory serve
# The demo and the benches serve plain HTTP on this machine, with the offline test checkout:
# both are refused with DEBUG off unless asked for (README, "Security settings"). Webhooks
# may go to receivers on this machine (private addresses are refused otherwise).
PLAIN_HTTP_DEMO = ALLOW_PLAIN_HTTP=1 ALLOW_LOCAL_PAYMENTS=1 WEBHOOKS_ALLOW_PRIVATE=1
run: venv pdf-libraries
ifdef DATABASE_URL
	$(SERVE)
else
	$(EMBEDDED_PG) run -- $(SERVE) EMBEDDED=1
endif

serve: venv
	$(BIN)/python manage.py migrate --noinput -v0
	@# The demo's cards and invoices are the offline test checkout's: allowed, as for the server.
	$(PLAIN_HTTP_DEMO) $(BIN)/python manage.py seed_demo
	@echo
	@echo "Tally is starting at http://127.0.0.1:$(PORT)/  (Ctrl-C stops web, worker and scheduler$(if $(EMBEDDED),$(comma) then PostgreSQL))"
	@# Ctrl-C ends honcho with 130: the demo stopped as asked, not an error.
	PORT=$(PORT) SITE_URL=$${SITE_URL:-http://127.0.0.1:$(PORT)} $(PLAIN_HTTP_DEMO) $(BIN)/honcho start -f Procfile || test $$? -eq 130

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .

test: venv services chromium pdf-libraries lint
	@if $(PG_ANSWERS); then \
		echo "--- the suite on the machine's PostgreSQL ($(PG_URL)) ---"; \
		echo "DATABASE_URL=$(PG_URL) REDIS_URL=$(TEST_REDIS_URL) $(PYTEST)"; \
		DATABASE_URL=$(PG_URL) REDIS_URL=$(TEST_REDIS_URL) $(PYTEST); \
	else \
		echo "--- no PostgreSQL answers at $(PG_URL): the suite on the embedded one (var/postgres) ---"; \
		echo "REDIS_URL=$(TEST_REDIS_URL) $(EMBEDDED_PG) run -- $(PYTEST)"; \
		REDIS_URL=$(TEST_REDIS_URL) $(EMBEDDED_PG) run -- $(PYTEST); \
	fi

bench: venv machine-postgres services
	DATABASE_URL=$(PG_URL) REDIS_URL=$(TEST_REDIS_URL) $(PLAIN_HTTP_DEMO) $(BIN)/python -m bench

# The browser tests that shoot every page, writing to var/screenshots/ (gitignored).
SCREENSHOT_TESTS := tests/test_phone_browser.py -k "every_demo_page or sideways_on_a_phone or screenshots_at_desktop"
screenshots: venv services chromium
	rm -rf var/screenshots
	@if $(PG_ANSWERS); then \
		DATABASE_URL=$(PG_URL) REDIS_URL=$(TEST_REDIS_URL) SCREENSHOTS_DIR=$(CURDIR)/var/screenshots $(PYTEST) -q $(SCREENSHOT_TESTS); \
	else \
		REDIS_URL=$(TEST_REDIS_URL) SCREENSHOTS_DIR=$(CURDIR)/var/screenshots $(EMBEDDED_PG) run -- $(PYTEST) -q $(SCREENSHOT_TESTS); \
	fi
	@echo "Screenshots: var/screenshots/ ($$(ls var/screenshots | wc -l) files)"

clean:
	-test ! -x $(BIN)/python || $(EMBEDDED_PG) stop
	rm -rf $(VENV) var staticfiles screenshots
