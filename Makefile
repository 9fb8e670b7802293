# boardcast — two commands do everything on a fresh machine:
#   make run    start the server on a local database, with a demo project and a board link per demo user
#   make test   run the whole test suite against a real PostgreSQL
# Both find PostgreSQL with scripts/pg.sh: DATABASE_URL, else a server on 127.0.0.1:5432, else a throwaway
# cluster in ./.pgdata started with initdb/pg_ctl.

SHELL := /bin/bash
CARGO ?= cargo
# Where cargo puts its builds (CARGO_TARGET_DIR, if set): the release binary make run and make bench start,
# and the debug build the JavaScript client's tests run.
TARGET_DIR := $(abspath $(or $(CARGO_TARGET_DIR),target))
BIN := $(if $(CARGO_TARGET_DIR),$(TARGET_DIR),./target)/release/boardcast

.PHONY: run test test-js build bench lint pg-stop help

help:
	@echo "make run      start boardcast on a local database (demo project + a board link per user)"
	@echo "make test     run the test suite (starts PostgreSQL if none is running), test-js included"
	@echo "make test-js  only the JavaScript client's tests (Node, and headless Chromium)"
	@echo "make bench    run the benchmark and update BENCHMARKS.md"
	@echo "make lint     rustfmt check and clippy"
	@echo "make pg-stop  stop the throwaway PostgreSQL cluster in ./.pgdata, if one was started"

build:
	$(CARGO) build --release --workspace --bins

run: build
	@set -e; eval "$$(scripts/pg.sh env boardcast)"; export DATABASE_URL; \
	  demo="$$($(BIN) demo)"; eval "$$demo"; \
	  addr="$${BOARDCAST_ADDR:-127.0.0.1:8080}"; \
	  echo; \
	  echo "  boardcast is starting on http://$$addr  (database: $$DATABASE_URL)"; \
	  echo "  demo project: $$DEMO_PROJECT"; \
	  echo "  the board, signed in as each demo user (open both, side by side):"; \
	  for u in $$DEMO_USERS; do tok="DEMO_TOKEN_$$u"; echo "    $$u: http://$$addr/#token=$${!tok}"; done; \
	  echo; \
	  echo "  watch the feed:   $(BIN) watch $$DEMO_PROJECT --token $$DEMO_TOKEN --url ws://$$addr/ws"; \
	  echo "  or any client:    ws://$$addr/ws?token=$$DEMO_TOKEN  then send {\"op\":\"join\",\"project\":\"$$DEMO_PROJECT\"}"; \
	  echo "  write with psql:  psql '$$DATABASE_URL' -c \"INSERT INTO tasks (project_id, title) VALUES ('$$DEMO_PROJECT', 'hello')\""; \
	  echo; \
	  exec $(BIN) serve

test:
	@set -e; eval "$$(scripts/pg.sh env)"; export BOARDCAST_TEST_DATABASE_URL="$$DATABASE_URL"; \
	  scripts/drop-test-databases.sh "$$DATABASE_URL"; \
	  $(CARGO) test --workspace --all-targets; \
	  $(MAKE) --no-print-directory test-js; \
	  scripts/drop-test-databases.sh "$$DATABASE_URL"   # kept only when a test failed, for a look

# make test-js: the JavaScript client (clients/js) with Node's test runner, against `boardcast serve` (the debug
# build, built here if needed) on databases of their own, and in headless Chromium (/usr/bin/chromium, or
# CHROMIUM). Needs Node.js 20+ and npm; installs the dev dependencies (npm ci) when node_modules is missing.
test-js:
	@set -e; \
	  if [ -z "$$BOARDCAST_TEST_DATABASE_URL" ]; then \
	    eval "$$(scripts/pg.sh env)"; export BOARDCAST_TEST_DATABASE_URL="$$DATABASE_URL"; fi; \
	  command -v node >/dev/null || { echo "make test-js: Node.js 20 or newer is needed"; exit 1; }; \
	  $(CARGO) build --bin boardcast; \
	  [ -d clients/js/node_modules ] || (cd clients/js && npm ci --no-audit --no-fund); \
	  cd clients/js && BOARDCAST_BIN="$(TARGET_DIR)/debug/boardcast" node --test --test-concurrency=1 test/*.test.js

# make bench: every scenario (a few minutes) against database boardcast_bench (its schema is recreated);
# writes BENCHMARKS.md and docs/bench/latency.svg. One scenario, other sizes:
#   make bench BENCH_ARGS='--scenario latency --clients 2000 --rate 2000'   (see boardcast-bench --help)
bench: build
	@set -e; eval "$$(scripts/pg.sh env boardcast_bench)"; export DATABASE_URL; \
	  $(BIN)-bench --server-bin $(BIN) $(BENCH_ARGS)

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

pg-stop:
	scripts/pg.sh stop
