# Two commands: `make install`, then `make test`. The local stack (Postgres, Kafka, Kafka Connect
# + Debezium, FerretDB) runs as plain processes; see `python -m launcher --help`.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STACK := $(PY) -m launcher
#: where `make test` writes its JUnit report (.ci/run reads it)
JUNIT ?= build/test-results/junit.xml
PYTEST_ARGS ?=
C ?=

.PHONY: help install lint test run down bench bench-mongo stack-up stack-down stack-status stack-logs

help:
	@echo "make install        create $(VENV) and install the project with its dev tools"
	@echo "make test           start the stack, run every test, stop the stack"
	@echo "                    (MIS_STACK_REUSE=1: use an already running stack, leave it up)"
	@echo "make run            start the stack and the demo; Ctrl-C stops both"
	@echo "make lint           ruff (lint and format) and mypy"
	@echo "make bench          throughput and end-to-end delay on a fresh stack"
	@echo "make bench-mongo    MongoDB-wire server by _id: replace rate, find_one latency"
	@echo "make stack-up | stack-down | stack-status | stack-logs [C=kafka] | down"

install:
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'

lint:
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy streams schemas launcher connectors

stack-up:
	$(STACK) up

stack-down:
	$(STACK) down

down:
	@if test -f $(WORKER_PID); then kill $$(cat $(WORKER_PID)) 2>/dev/null || true; rm -f $(WORKER_PID); sleep 2; fi
	$(STACK) down

stack-status:
	$(STACK) status

stack-logs:
	$(STACK) logs $(C)

# The stack is torn down on every exit path (failure, Ctrl-C) unless it was reused.
test:
	@mkdir -p $(dir $(JUNIT))
	@if [ "$${MIS_STACK_REUSE:-0}" = 1 ]; then \
	  $(STACK) status >/dev/null || { \
	    echo "MIS_STACK_REUSE=1 but the stack is not up and healthy: run 'make stack-up'" >&2; \
	    exit 1; }; \
	else \
	  trap 'exit 130' INT TERM; trap '$(STACK) down' EXIT; \
	  $(STACK) up; \
	fi; \
	$(PY) -m pytest -p no:cacheprovider --junitxml=$(JUNIT) $(PYTEST_ARGS) tests

# The worker's pid goes next to the stack's, so that `make down` from another shell stops it too.
WORKER_PID = $${MIS_STATE_DIR:-.stack}/run/worker.pid

run:
	@trap 'exit 130' INT TERM; \
	trap 'test -f $(WORKER_PID) && kill $$(cat $(WORKER_PID)) 2>/dev/null; rm -f $(WORKER_PID); sleep 2; $(STACK) down' EXIT; \
	$(STACK) up; \
	$(PY) -m streams.cli worker > $${MIS_STATE_DIR:-.stack}/logs/worker.log 2>&1 & \
	echo $$! > $(WORKER_PID); \
	$(PY) -m streams.cli demo --watch 90; \
	echo "The worker keeps the snapshots current (log: $${MIS_STATE_DIR:-.stack}/logs/worker.log)."; \
	echo "Write to the source tables (psql -h 127.0.0.1 -p $${MIS_PG_PORT:-55432} -U postgres storage_guard);"; \
	echo "Ctrl-C or 'make down' stops the worker and the stack."; \
	wait

# Throughput and end-to-end delay on a fresh stack of its own (figures printed, nothing asserted).
bench:
	@trap 'exit 130' INT TERM; trap '$(STACK) down' EXIT; \
	$(STACK) up; \
	$(PY) -m streams.bench $(BENCH_ARGS)

# Operations by _id on the MongoDB-wire server, patched (the stack's) and as published, on a fresh
# stack of its own (figures printed, nothing asserted; about ten minutes).
BENCH_MONGO_ARGS ?= --sizes 1000,100000 --stock-sizes 1000,10000
bench-mongo:
	@trap 'exit 130' INT TERM; trap '$(STACK) down' EXIT; \
	$(STACK) up; \
	$(PY) -m streams.benchmarks.mongo_ids $(BENCH_MONGO_ARGS)
