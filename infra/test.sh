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
.venv/bin/switchyard topics apply | tail -1

log "lint: ruff, mypy --strict and the import contracts"
.venv/bin/ruff check services tests
.venv/bin/ruff format --check services tests
.venv/bin/mypy
.venv/bin/lint-imports

log "schema evolution: every schema against its history, both directions; generated models and AsyncAPI"
.venv/bin/switchyard schemas check

log "configuration: routes, policies, providers and topics, references across files included"
.venv/bin/switchyard config check

# the dashboard test drives Debian's headless Chromium; install it (quietly) where it is missing
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  log "installing chromium and chromium-driver for the dashboard test"
  sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq chromium chromium-driver >/dev/null
fi

# the ACL tests (tests/integration/test_kafka_acls.py) log in on the broker's SASL_SSL listener, as each principal
export SWITCHYARD_KAFKA_SASL_PORT=${SWITCHYARD_KAFKA_SASL_PORT:-9094}
log "tests: unit and integration, against the real components (ACL tests on SASL_SSL :$SWITCHYARD_KAFKA_SASL_PORT)"
# pytest exits 5 when it collects no test; that is a failure here, as any non-zero exit is.
.venv/bin/pytest tests "$@"
