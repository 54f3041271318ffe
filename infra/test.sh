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

# Kafka's listener for the suite (SWITCHYARD_TEST_KAFKA): sasl_ssl (the default), which runs every client the tests build,
# and every tool, as admin over SCRAM/TLS, and every chain process a test starts as its own principal
# (switchyard-<process>) with its ACLs granted under the test's topic prefix; plaintext runs it all on the
# loopback PLAINTEXT listener, whose clients are super users. The ACL tests log in on SASL_SSL either way.
export SWITCHYARD_KAFKA_SASL_PORT=${SWITCHYARD_KAFKA_SASL_PORT:-9094}
case "${SWITCHYARD_TEST_KAFKA:-sasl_ssl}" in
  sasl_ssl)
    export SWITCHYARD_KAFKA_SECURITY_PROTOCOL=SASL_SSL
    export SWITCHYARD_KAFKA_BOOTSTRAP="$SWITCHYARD_HOST:$SWITCHYARD_KAFKA_SASL_PORT"
    # unset, each process is its own principal (and the harness the admin); set, all would share one
    unset SWITCHYARD_KAFKA_USERNAME SWITCHYARD_KAFKA_PASSWORD_FILE ;;
  plaintext)
    export SWITCHYARD_KAFKA_SECURITY_PROTOCOL=PLAINTEXT
    export SWITCHYARD_KAFKA_BOOTSTRAP="$SWITCHYARD_HOST:${SWITCHYARD_KAFKA_PORT:-9092}" ;;
  *) die "SWITCHYARD_TEST_KAFKA is sasl_ssl or plaintext, not ${SWITCHYARD_TEST_KAFKA}" ;;
esac

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

log "tests: unit and integration, against the real components (Kafka: $SWITCHYARD_KAFKA_SECURITY_PROTOCOL on $SWITCHYARD_KAFKA_BOOTSTRAP)"
# pytest exits 5 when it collects no test; that is a failure here, as any non-zero exit is.
.venv/bin/pytest tests "$@"
