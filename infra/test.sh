#!/usr/bin/env bash
# `make test`: start what the tests need (only what is not already running), run lint and every test,
# then stop what this run started. Exits with the first failure; a run that collects no test fails.
COMPONENT=test
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$SWITCHYARD_ROOT"

started=()
cleanup() {
  local c
  for ((i = ${#started[@]} - 1; i >= 0; i--)); do
    c=${started[i]}
    bash "infra/$c/$c.sh" stop || true
  done
}
trap cleanup EXIT

for c in kafka clickhouse weaviate; do
  if ! bash "infra/$c/$c.sh" status | grep -q ' up '; then started+=("$c"); fi
  bash "infra/$c/$c.sh" start
done
"$PYTHON" -m services.infra.topics apply | tail -1

log "lint: ruff and mypy --strict"
.venv/bin/ruff check services tests
.venv/bin/ruff format --check services tests
.venv/bin/mypy

log "schema evolution: every schema against its history, both directions"
"$PYTHON" -m services.runtime.compatibility
"$PYTHON" -m services.runtime.gen_models --check

log "tests: unit and integration, against the real components"
# pytest exits 5 when it collects no test; that is a failure here, as any non-zero exit is.
.venv/bin/pytest tests "$@"
