# Two commands, each complete on a fresh clone (see README.md):
#   make run    # fetch/build what is missing, start the stack and a worker, load demo data, watch the pipeline live
#   make test   # start a stack of its own, run unit and integration tests, tear it down
# Both first create .venv, or install it again when pyproject.toml changed since (`make venv`).
# The local stack (Postgres, Kafka, Kafka Connect + Debezium, FerretDB) runs as plain processes;
# see `python -m launcher --help`.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
# pyproject.toml's hash as of the last successful install: .venv is current while it matches.
STAMP := $(VENV)/.pyproject.sha256
STACK := $(PY) -m launcher
#: where `make test` writes its JUnit report (.ci/run reads it)
JUNIT ?= build/test-results/junit.xml
PYTEST_ARGS ?=
C ?=

.PHONY: help venv install lint test run down bench bench-sinks bench-load bench-live bench-mongo bench-states faults stack-up stack-down stack-status stack-logs

help:
	@echo "make run            fetch/build what is missing, start the stack and a worker, load demo data, watch the pipeline live"
	@echo "make test           start a stack of its own, run unit and integration tests, tear it down"
	@echo "                    (MIS_STACK_REUSE=1: use an already running stack, leave it up)"
	@echo "                    both first create $(VENV), or install it again when pyproject.toml changed"
	@echo "                    make run ends in mis watch; Ctrl-C stops the worker and the stack"
	@echo "make install        (re)install $(VENV) with the project and its dev tools, current or not"
	@echo "make lint           ruff (lint and format) and mypy"
	@echo "make bench          throughput and end-to-end delay on a fresh stack"
	@echo "make bench-sinks    backlog drain and Postgres freshness with MongoDB stopped"
	@echo "make bench-load     100k bookings and 1M readings loaded: time to every snapshot, peak RSS"
	@echo "make bench-live     source commit -> listing-change stream client, p50/p99"
	@echo "make bench-mongo    MongoDB-wire server by _id: replace rate, find_one latency"
	@echo "make bench-states   what each kind of key state costs to parse and write (no stack)"
	@echo "make faults         the fault matrix under load, checked against the source tables"
	@echo "make stack-up | stack-down | stack-status | stack-logs [C=kafka] | down"

# Costs one sha256sum when .venv is current.
venv:
	@if ! test -x $(PY) || ! sha256sum --status -c $(STAMP) 2>/dev/null; then \
	  echo "make: installing the Python environment in $(VENV) (first run: 1-2 minutes)"; \
	  $(MAKE) --no-print-directory install; \
	fi

install:
	@command -v $(PYTHON) >/dev/null || { echo "make: $(PYTHON) not found: install Python 3.11, or set PYTHON=/path/to/python3.11" >&2; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@sha256sum pyproject.toml > $(STAMP)

lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy streams schemas launcher connectors

stack-up: venv
	$(STACK) up

stack-down: venv
	$(STACK) down

down: venv
	@$(STOP_WORKER)
	$(STACK) down

stack-status: venv
	$(STACK) status

stack-logs: venv
	$(STACK) logs $(C)

# The stack is torn down on every exit path (failure, Ctrl-C) unless it was reused. A stack of its
# own gets a Postgres password of its own, which the tests look for where it must not be.
test: venv
	@mkdir -p $(dir $(JUNIT))
	@if [ "$${MIS_STACK_REUSE:-0}" = 1 ]; then \
	  $(STACK) status >/dev/null || { \
	    echo "MIS_STACK_REUSE=1 but the stack is not up and healthy: run 'make stack-up'" >&2; \
	    exit 1; }; \
	else \
	  trap 'exit 130' INT TERM; trap '$(STACK) down' EXIT; \
	  export MIS_PG_PASSWORD="$${MIS_PG_PASSWORD:-mis-test-$$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')}"; \
	  $(STACK) up; \
	fi; \
	$(PY) -m pytest -p no:cacheprovider --junitxml=$(JUNIT) $(PYTEST_ARGS) tests

# The worker's pid goes next to the stack's, so that `make down` from another shell stops it too.
WORKER_PID = $${MIS_STATE_DIR:-.stack}/run/worker.pid
# Stops the worker `make run` started, before the stack: SIGTERM, then SIGKILL if it has not
# exited within 20 s (a worker whose Kafka is already gone does not finish its shutdown).
STOP_WORKER = if test -f $(WORKER_PID); then pid=$$(cat $(WORKER_PID)); kill $$pid 2>/dev/null || true; \
	for i in $$(seq 40); do kill -0 $$pid 2>/dev/null || break; sleep 0.5; done; \
	kill -9 $$pid 2>/dev/null || true; rm -f $(WORKER_PID); fi

run: venv
	@trap 'exit 130' INT TERM; \
	trap '$(STOP_WORKER); $(STACK) down' EXIT; \
	$(STACK) up; \
	$(PY) -m streams.cli worker > $${MIS_STATE_DIR:-.stack}/logs/worker.log 2>&1 & \
	echo $$! > $(WORKER_PID); \
	$(PY) -m streams.cli demo --watch 90; \
	echo "The worker's log: $${MIS_STATE_DIR:-.stack}/logs/worker.log. Ctrl-C or 'make down' stops the worker and the stack."; \
	$(PY) -m streams.cli watch --while-pid $$(cat $(WORKER_PID))

# Throughput and end-to-end delay on a fresh stack of its own (figures printed, nothing asserted).
bench: venv
	@trap 'exit 130' INT TERM; trap '$(STACK) down' EXIT; \
	$(STACK) up; \
	$(PY) -m streams.bench $(BENCH_ARGS)

# The sinks alone: a backlog drained, and Postgres's freshness while MongoDB is stopped.
bench-sinks: venv
	@trap 'exit 130' INT TERM; trap '$(STACK) down' EXIT; \
	$(STACK) up; \
	$(PY) -m streams.benchmarks.sinks $(BENCH_ARGS)

# A large load (100k bookings, 1M readings) with one worker: until every snapshot and listing is
# current, and the peak RSS of every process (figures printed, nothing asserted; 10-20 minutes).
bench-load: venv
	@trap 'exit 130' INT TERM; trap '$(STACK) down' EXIT; \
	$(STACK) up; \
	$(PY) -m streams.benchmarks.load $(BENCH_ARGS)

# Source commit -> live push (the listing-change stream), one change at a time, with and without load.
BENCH_LIVE_ARGS ?= --changes 100
bench-live: venv
	@trap 'exit 130' INT TERM; trap '$(STACK) down' EXIT; \
	$(STACK) up; \
	$(PY) -m streams.benchmarks.live $(BENCH_LIVE_ARGS)

# What each kind of key state costs to parse and to write, and in memory (no stack needed).
bench-states: venv
	$(PY) -m streams.benchmarks.states $(BENCH_ARGS)

# Every fault of tests/faults/matrix.py under load on a fresh stack; prints the table.
faults: venv
	@trap 'exit 130' INT TERM; trap '$(STACK) down' EXIT; \
	$(STACK) up; \
	MIS_TICK_INTERVAL_S=1 $(PY) -m tests.faults.matrix $(FAULT_ARGS)

# Operations by _id on the MongoDB-wire server, patched (the stack's) and as published, on a fresh
# stack of its own (figures printed, nothing asserted; about ten minutes).
BENCH_MONGO_ARGS ?= --sizes 1000,100000 --stock-sizes 1000,10000
bench-mongo: venv
	@trap 'exit 130' INT TERM; trap '$(STACK) down' EXIT; \
	$(STACK) up; \
	$(PY) -m streams.benchmarks.mongo_ids $(BENCH_MONGO_ARGS)
