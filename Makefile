# Switchyard: every operation a human or CI runs is a target here. `make help` lists them.
# Paths and ports come from the environment (see docs/configuration.md); defaults suit one dev box.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON_BOOT ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# every operation goes through the one CLI (services/cli.py); `switchyard --help` lists its commands
SWITCHYARD := $(VENV)/bin/switchyard
export PYTHON := $(abspath $(PY))
export SWITCHYARD_VAR ?= $(CURDIR)/var
export SWITCHYARD_CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/switchyard
# llama-cpp-python compiles llama.cpp once (about 5 min on 2 cores); a portable CPU build, so the wheel pip
# caches runs on any x86-64 machine with AVX2, not only the one that built it
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_BLAS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF
INSTALLED := $(VENV)/.installed
COMPONENTS := kafka clickhouse weaviate
PYTEST_ARGS ?=
DEMO_ARGS ?=
BENCH_ARGS ?=

.PHONY: help
help: ## list every target with what it does
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  make %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(INSTALLED): pyproject.toml
	@$(PYTHON_BOOT) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed (set PYTHON_BOOT=python3.11)")'
	@test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install -q -e '.[dev]'
	@touch $@

.PHONY: install
install: $(INSTALLED) ## create .venv and install Switchyard with its dev tools (pip install -e .[dev])

.PHONY: fetch
fetch: $(INSTALLED) ## resolve Kafka's jars and build Weaviate into the user cache (once; later runs reuse it)
	@bash infra/kafka/kafka.sh fetch
	@bash infra/weaviate/weaviate.sh fetch

.PHONY: up
up: $(INSTALLED) ## start Kafka, ClickHouse (chDB) and Weaviate on loopback, migrate tables, apply topics
	@start=$$(date +%s%N); \
	bash infra/kafka/kafka.sh start; \
	bash infra/clickhouse/clickhouse.sh start; \
	bash infra/weaviate/weaviate.sh start; \
	$(SWITCHYARD) topics apply | tail -1; \
	echo "[up] all components ready in $$(( ($$(date +%s%N) - start) / 1000000 )) ms"

.PHONY: down
down: ## stop every component cleanly (state under var/ is kept)
	@for c in weaviate clickhouse kafka; do bash infra/$$c/$$c.sh stop; done

.PHONY: status
status: ## show which components run, where
	@for c in $(COMPONENTS); do bash infra/$$c/$$c.sh status; done

.PHONY: config-check
config-check: $(INSTALLED) ## validate routes/, policies/, providers/ and topics/ together, references across files included
	@$(SWITCHYARD) config check

.PHONY: topics
topics: $(INSTALLED) ## reconcile the broker with topics/ (prints the diff, then applies it)
	@$(SWITCHYARD) topics apply

.PHONY: topics-plan
topics-plan: $(INSTALLED) ## print what `make topics` would change, change nothing
	@$(SWITCHYARD) topics plan

.PHONY: acls
acls: $(INSTALLED) ## create the SCRAM users and least-privilege ACLs of services/infra/acls.py that are missing (as admin)
	@$(PY) -m services.infra.acls apply

.PHONY: acls-plan
acls-plan: $(INSTALLED) ## print the SCRAM users and ACLs `make acls` would add, and grants beyond them; change nothing
	@$(PY) -m services.infra.acls plan

.PHONY: migrate
migrate: $(INSTALLED) ## apply infra/clickhouse/*.sql to ClickHouse (idempotent)
	@$(SWITCHYARD) migrate

.PHONY: query
query: $(INSTALLED) ## run SQL against ClickHouse: make query SQL='SELECT count() FROM switchyard.requests'
	@test -n "$${SQL:-}" || { echo "usage: make query SQL='SELECT ...'" >&2; exit 2; }
	@$(SWITCHYARD) query "$$SQL"

.PHONY: verify
verify: $(INSTALLED) ## walk the audit hash chains in ClickHouse, report the first broken link and any signed checkpoint they fail (VERIFY_ARGS='--chain 0417')
	@$(SWITCHYARD) verify $(VERIFY_ARGS)

.PHONY: replay
replay: $(INSTALLED) ## re-run a request's routing, context and policy decisions: make replay REQUEST_ID=...
	@test -n "$${REQUEST_ID:-}" || { echo "usage: make replay REQUEST_ID=<request id>" >&2; exit 2; }
	@$(SWITCHYARD) replay "$$REQUEST_ID"

.PHONY: export-audit
export-audit: $(INSTALLED) ## audit records for a regulator: make export-audit SINCE=2026-11-01 [UNTIL=...] [FORMAT=parquet OUT=f]
	@test -n "$${SINCE:-}" || { echo "usage: make export-audit SINCE=<ISO date> [UNTIL=..] [FORMAT=jsonl|parquet] [OUT=file]" >&2; exit 2; }
	@$(SWITCHYARD) export-audit --since "$$SINCE" $${UNTIL:+--until "$$UNTIL"} --format $${FORMAT:-jsonl} $${OUT:+--output "$$OUT"}

.PHONY: work-split
work-split: $(INSTALLED) ## the measured orchestration-work split next to the reference (SPLIT_ARGS='--minutes 60')
	@$(SWITCHYARD) work-split $(SPLIT_ARGS)

.PHONY: dashboard
dashboard: $(INSTALLED) ## serve the live dashboard on http://127.0.0.1:9110/ (SWITCHYARD_DASHBOARD_PORT; sign in with var/secrets/dashboard.token)
	@$(SWITCHYARD) dashboard

.PHONY: bench-audit
bench-audit: $(INSTALLED) ## audit write throughput (decide, row build, ClickHouse insert) as JSON
	@$(SWITCHYARD) bench-audit $(BENCH_ARGS)

.PHONY: schemas-check
schemas-check: $(INSTALLED) ## check every schema against its history, both directions, and that models are generated
	@$(SWITCHYARD) schemas check

.PHONY: asyncapi
asyncapi: $(INSTALLED) ## regenerate schemas/asyncapi.yaml, the AsyncAPI 3.0 document of topics/ and schemas/
	@$(SWITCHYARD) schemas asyncapi

.PHONY: schemas-register
schemas-register: $(INSTALLED) ## register the current schemas with SWITCHYARD_SCHEMA_REGISTRY_URL (<topic>-value subjects), print the ids
	@$(SWITCHYARD) schemas register

.PHONY: schema-release
schema-release: $(INSTALLED) ## keep schemas in history before changing them: make schema-release NAMES='Request Routed'
	@test -n "$${NAMES:-}" || { echo "usage: make schema-release NAMES='Request ...'" >&2; exit 2; }
	@$(SWITCHYARD) schemas release $$NAMES

.PHONY: demo
demo: seed ## set up everything and run the main job: the six-stage chain answering a mix of POS requests (stock, stores, customers and the knowledge base seeded first)
	@$(SWITCHYARD) demo $(DEMO_ARGS)

.PHONY: demo-learning
demo-learning: up ## the learning loop: traffic, simulated reviews, export, train, shadow, promote; before/after table
	@$(SWITCHYARD) demo-learning $(DEMO_ARGS)

.PHONY: bench
bench: up ## full-chain throughput and latency as JSON (BENCH_ARGS='--rate 100 --duration 30')
	@$(SWITCHYARD) bench $(BENCH_ARGS)

.PHONY: bench-gateway
bench-gateway: up ## the HTTP gateway + fused chain, open loop, beside the stub asked directly: overhead p50/p99 per rate as JSON (BENCH_ARGS='--rates 25 50 100 --unique-texts')
	@$(SWITCHYARD) bench-gateway $(BENCH_ARGS)

.PHONY: bench-runtime
bench-runtime: up ## the stream runtime alone: five relay stages, transactions on, per-hop and 5-hop latency, highest rate (BENCH_ARGS='--rates 100 1000')
	@$(SWITCHYARD) bench-runtime $(BENCH_ARGS)

.PHONY: chaos
chaos: up ## each fault (broker, ClickHouse, Weaviate, provider, stage kill/stop, hostile records) under steady load: one table (CHAOS_ARGS='--rate 50 --scale 1')
	@$(SWITCHYARD) chaos $(CHAOS_ARGS)

.PHONY: soak
soak: up ## steady load for DURATION seconds (default 1800), RSS and open files of every process each minute; flat is the pass
	@$(SWITCHYARD) soak --duration $(or $(DURATION),1800) $(SOAK_ARGS)

.PHONY: seed
seed: up ## publish stores, staff, stock (3,312 SKUs) and customers to ref.*, ingest the knowledge base into Weaviate
	@$(SWITCHYARD) seed-stores --stores 1600
	@$(SWITCHYARD) knowledge ingest

.PHONY: bench-stitcher
bench-stitcher: up ## (after `make seed`) stitcher records/s and stitch time p50/p99 with the real tables and Weaviate, as JSON
	@$(SWITCHYARD) bench-stitcher $(BENCH_ARGS)

.PHONY: eval-retrieval
eval-retrieval: up ## knowledge-base retrieval on the labelled questions: recall@5, MRR, latency, embeddings/s
	@$(SWITCHYARD) eval-retrieval $(EVAL_ARGS)

.PHONY: eval-answers
eval-answers: up ## right answers on the labelled POS set: share correct and junk released, per intent and per route
	@$(SWITCHYARD) eval-answers $(EVAL_ARGS)

.PHONY: export
export: $(INSTALLED) ## write the system as one hash-signed bundle (dir + .tar.gz) under dist/ (EXPORT_ARGS='--with-data')
	@$(SWITCHYARD) export $(EXPORT_ARGS)

.PHONY: import
import: $(INSTALLED) ## check a bundle, lay it out: make import BUNDLE=dist/x.tar.gz INTO=DIR (IMPORT_ARGS=...)
	@test -n "$${BUNDLE:-}" && test -n "$${INTO:-}" || { echo "usage: make import BUNDLE=... INTO=DIR" >&2; exit 2; }
	@$(SWITCHYARD) import "$$BUNDLE" --into "$$INTO" $(IMPORT_ARGS)

.PHONY: validate-manifests
validate-manifests: $(INSTALLED) ## infra/deploy and prometheus.yml vs the process registry, kubeconform on offline schemas, compose checks
	@$(SWITCHYARD) deploy-manifests check
	@$(SWITCHYARD) scrape-config check
	@bash infra/deploy/kubeconform.sh validate
	@$(SWITCHYARD) validate-manifests compose

.PHONY: eval-governance
eval-governance: $(INSTALLED) ## governance on the labelled set: PII P/R per type, toxicity, injection, promises, rules
	@$(SWITCHYARD) eval-governance $(EVAL_ARGS)

.PHONY: bench-governor
bench-governor: $(INSTALLED) ## governor records/s and p50/p95/p99 added latency in process, as JSON
	@$(SWITCHYARD) bench-governor $(BENCH_ARGS)

.PHONY: bench-answerer
bench-answerer: $(INSTALLED) ## answerer output-guard answers/s, CPU per answer and p50/p95/p99 added latency in process, as JSON
	@$(SWITCHYARD) bench-answerer $(BENCH_ARGS)

.PHONY: lint
lint: $(INSTALLED) ## ruff (lint and format check), mypy --strict and the import contracts (lint-imports)
	@$(VENV)/bin/ruff check services tests
	@$(VENV)/bin/ruff format --check services tests
	@$(VENV)/bin/mypy
	@$(VENV)/bin/lint-imports

.PHONY: test-unit
test-unit: $(INSTALLED) ## unit tests only: no broker, no database
	@$(VENV)/bin/pytest tests/unit $(PYTEST_ARGS)

.PHONY: test
test: $(INSTALLED) ## install, start what the tests need, run lint and every test (Kafka on SASL_SSL), stop what it started
	@bash infra/test.sh $(PYTEST_ARGS)

.PHONY: clean
clean: down ## stop everything and delete run-time state (var/); the user cache is kept
	rm -rf var

.PHONY: distclean
distclean: clean ## also delete .venv and the cached Kafka jars and Weaviate build
	rm -rf $(VENV) "$(SWITCHYARD_CACHE)"
