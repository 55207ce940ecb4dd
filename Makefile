# orders-service developer entry points. Everything runs inside the uv-managed venv.
# `make run` needs only RabbitMQ (started if down); MongoDB is the embedded mongod
# from the `embedded-mongo` group unless ORDERS_MONGO_URL is set.

SHELL := /bin/bash
# `python3 -m uv` works even when pip put the uv binary somewhere off PATH.
UV ?= $(shell command -v uv 2>/dev/null || echo python3 -m uv)
PYTEST_ARGS ?=
MONGO_DBPATH ?= .data/mongo
MONGO_PORT ?= 27018
DOCS_PORT ?= 8000

.PHONY: help install lint fmt typecheck unit integration e2e test rabbitmq run http api-key mongo-stop migrate-queues cluster cluster-stop cluster-test cluster-chaos chaos bench bench-memory docs docs-gen compose-env clean

help:
	@echo "targets: install lint fmt typecheck unit integration e2e test run http api-key mongo-stop migrate-queues cluster cluster-stop cluster-test cluster-chaos chaos bench bench-memory docs docs-gen compose-env clean"

install:
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 \
		|| python3 -m pip install --quiet uv \
		|| python3 -m pip install --quiet --user --break-system-packages uv
	$(UV) sync --frozen

# ruff, and the import contracts ([tool.importlinter] in pyproject.toml).
lint: install
	$(UV) run ruff check .
	$(UV) run ruff format --check .
	$(UV) run lint-imports

fmt: install
	$(UV) run ruff check --fix .
	$(UV) run ruff format .

typecheck: install
	$(UV) run mypy

rabbitmq: install
	$(UV) run python -m devtools.rabbitmq ensure

unit: install
	$(UV) run pytest tests/unit $(PYTEST_ARGS)

integration: install rabbitmq
	$(UV) run pytest tests/integration $(PYTEST_ARGS)

e2e: install rabbitmq
	$(UV) run pytest tests/e2e $(PYTEST_ARGS)

# The whole suite; the test fixtures start (and stop) their own mongod.
test: install rabbitmq lint typecheck
	$(UV) run pytest $(PYTEST_ARGS)

# The embedded default MongoDB when ORDERS_MONGO_URL is unset: started (or reused) under .data/.
# Part of one recipe line, so ORDERS_MONGO_URL reaches the process that follows it.
define WITH_MONGO
set -euo pipefail; \
if [ -z "$${ORDERS_MONGO_URL:-}" ]; then \
	ORDERS_MONGO_URL="$$($(UV) run python -m devtools.embedded_mongo ensure \
		--dbpath $(MONGO_DBPATH) --port $(MONGO_PORT))"; \
	export ORDERS_MONGO_URL; \
	echo "embedded MongoDB at $$ORDERS_MONGO_URL (make mongo-stop stops it)" >&2; \
fi
endef

# The worker in the foreground; exec so Ctrl-C goes to it.
run: install rabbitmq
	@$(WITH_MONGO); exec $(UV) run faststream run --factory service.app:create_app

# Move the messages of queues an older version declared (classic queues) into the quorum
# queues this version declares, with every worker and gateway stopped (docs/operations.md,
# "Upgrading to quorum queues"). ARGS=--dry-run lists what it would do.
migrate-queues: install
	$(UV) run python -m service.migrate_queues $(ARGS)

# The HTTP gateway (uvicorn) on ORDERS_API_HOST:ORDERS_API_PORT (default 127.0.0.1:8080),
# over the same store and events as the worker; it needs no worker running. Its /api/orders
# routes answer only the API keys whose digests are in ORDERS_API_KEY_HASHES (`make api-key`).
http: install rabbitmq
	@if [ -z "$${ORDERS_API_KEY_HASHES:-}" ] || [ "$${ORDERS_API_KEY_HASHES// /}" = "[]" ]; then \
		echo "ORDERS_API_KEY_HASHES is not set: every /api/orders request will be answered 401." >&2; \
		echo "For a development key: eval \"\$$(make -s api-key)\" && make http" >&2; \
		echo "(then send Authorization: Bearer \$$ORDERS_API_KEY)" >&2; \
	fi
	@$(WITH_MONGO); exec $(UV) run python -m service.gateway

# A new API key for the HTTP gateway, printed as shell lines: ORDERS_API_KEY (for clients) and
# ORDERS_API_KEY_HASHES (its digest, the gateway's setting). `eval "$(make -s api-key)"`.
api-key: install
	@$(UV) run python -m devtools.api_key

mongo-stop: install
	$(UV) run python -m devtools.embedded_mongo stop --dbpath $(MONGO_DBPATH) --port $(MONGO_PORT)

# A local cluster beside the system broker (docs/operations.md "A local cluster"): RabbitMQ
# nodes c1-c3@localhost on 127.0.0.1:5682-5684 and MongoDB replica set rs-cluster on
# 127.0.0.1:27031-27033, data under .data/cluster/; reused when it runs. Prints the service's
# settings for it: eval "$$(make -s cluster)" && make run
cluster: install
	@$(UV) run python -m devtools.cluster start

# Stops the cluster's nodes and members (their data stays; `python -m devtools.cluster reset`
# deletes it).
cluster-stop: install
	@$(UV) run python -m devtools.cluster stop

# The tests marked `cluster` (left out of `make test`): they start the local cluster if needed.
cluster-test: install
	$(UV) run pytest -m cluster $(PYTEST_ARGS)

# The chaos run on the local cluster (docs/reliability.md "On the cluster"): starts `make
# cluster` if it is not running (and stops it after), a vhost and a database of its own, two
# workers given every node; stops and kills the node holding the queue leaders, kills the
# MongoDB primary and a worker. CHAOS_MESSAGES (default 8000), CHAOS_SEED, CHAOS_RATE (50).
cluster-chaos: install
	$(UV) run python -m devtools.chaos --cluster

# Fault injection under load (docs/reliability.md): its own vhost, mongod and two workers;
# restarts the local RabbitMQ. CHAOS_MESSAGES (default 20000), CHAOS_SEED, CHAOS_RATE.
chaos: install rabbitmq
	$(UV) run python -m devtools.chaos

# Throughput against a naive consumer, request latency, queries on 1,000,000 orders, the
# HTTP gateway's place/action/get/list (docs/benchmarks.md): its own mongod and vhost;
# writes .bench/latest.json.
# BENCH_SCALE=small for a run under 2 minutes (default full, ~20 minutes).
bench: install rabbitmq
	$(UV) run python -m bench.run

# Memory under hostile input (docs/benchmarks.md "Memory under large orders"): 3,000 place
# commands of ~240 KB to the worker (AMQP) and the gateway (HTTP); peak and final RSS of
# each, bound 300 MB. Its own mongod and vhost; writes .bench/memory.json (~10 minutes).
bench-memory: install rabbitmq
	$(UV) run python -m bench.memory

# The message catalogue (docs/messages.md "Message catalogue page"): docs/asyncapi.json and the HTTP
# API's docs/openapi.json are generated from the code (tests/unit/test_asyncapi.py and
# test_openapi_document.py fail when they are stale); `make docs` serves the catalogue as an
# offline HTML page on 127.0.0.1:$(DOCS_PORT).
# The docker-compose stack's secrets: writes the git-ignored .env from .env.example with
# random values (never overwrites an existing .env).
compose-env: install
	$(UV) run python -m devtools.compose_env

docs-gen: install
	$(UV) run python -m devtools.catalogue gen

docs: install
	$(UV) run python -m devtools.catalogue serve --port $(DOCS_PORT)

clean:
	@if [ -f $(MONGO_DBPATH)/mongod.pid ] && [ -d .venv ]; then $(MAKE) --no-print-directory mongo-stop; fi
	@if [ -d .data/cluster ] && [ -d .venv ]; then $(MAKE) --no-print-directory cluster-stop; fi
	rm -rf .data .mypy_cache .ruff_cache .import_linter_cache .pytest_cache .hypothesis .bench
	find . -path ./.venv -prune -o -type d -name __pycache__ -exec rm -rf {} +
