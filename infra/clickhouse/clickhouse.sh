#!/usr/bin/env bash
# ClickHouse for Switchyard: the embedded chDB owner (services.dev.clickhouse_http) serving ClickHouse's HTTP
# interface on loopback, or, when SWITCHYARD_CLICKHOUSE_URL names another server, a check that it answers.
# Either way `start` ends by applying the migrations in infra/clickhouse/. The embedded server wants a password:
# SWITCHYARD_CLICKHOUSE_PASSWORD when set, else var/secrets/clickhouse.password, written here once (random, 0600),
# which every client reads too (services/settings.py); none only with SWITCHYARD_CLICKHOUSE_ALLOW_NO_PASSWORD=true.
# SWITCHYARD_CLICKHOUSE_SERVER_ARGS adds server options (--allow-host NAME, --max-execution-time S; see --help).
# usage: clickhouse.sh start|stop|status
COMPONENT=clickhouse
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

CLICKHOUSE_PORT=${SWITCHYARD_CLICKHOUSE_PORT:-8123}
EMBEDDED_URL="http://$SWITCHYARD_HOST:$CLICKHOUSE_PORT"
CLICKHOUSE_URL=${SWITCHYARD_CLICKHOUSE_URL:-$EMBEDDED_URL}
STATE=$SWITCHYARD_VAR/clickhouse
DATA=${SWITCHYARD_CHDB_PATH:-$STATE/data}
GRACE=${SWITCHYARD_CLICKHOUSE_GRACE:-30}
export SWITCHYARD_CLICKHOUSE_PASSWORD_FILE=${SWITCHYARD_CLICKHOUSE_PASSWORD_FILE:-$SWITCHYARD_VAR/secrets/clickhouse.password}
read -r -a SERVER_ARGS <<< "${SWITCHYARD_CLICKHOUSE_SERVER_ARGS:-}"

external() { [ "$CLICKHOUSE_URL" != "$EMBEDDED_URL" ]; }

ping_url() { "$PYTHON" -c 'import sys, urllib.request as u; u.urlopen(sys.argv[1] + "/ping", timeout=2)' "${CLICKHOUSE_URL%/}"; }

truthy() { case "${1,,}" in 1|true|yes|on) return 0 ;; *) return 1 ;; esac; }

ensure_password() {
  local file=$SWITCHYARD_CLICKHOUSE_PASSWORD_FILE dir
  if [ -n "${SWITCHYARD_CLICKHOUSE_PASSWORD+set}" ] || [ -s "$file" ]; then return 0; fi
  if truthy "${SWITCHYARD_CLICKHOUSE_ALLOW_NO_PASSWORD:-}"; then
    log "no password (SWITCHYARD_CLICKHOUSE_ALLOW_NO_PASSWORD): every local process and user can use ClickHouse"
    return 0
  fi
  dir=$(dirname "$file")
  [ -d "$dir" ] || (umask 077 && mkdir -p "$dir")
  (umask 077 && "$PYTHON" -c 'import secrets; print(secrets.token_urlsafe(32))' > "$file.new") && mv "$file.new" "$file"
  log "wrote a new password to $file (mode 0600); clients read it from there"
}

migrate() {
  SWITCHYARD_CLICKHOUSE_URL=$CLICKHOUSE_URL "$PYTHON" -m services.infra.clickhouse migrate \
    || die "migrations failed against $CLICKHOUSE_URL"
}

start() {
  if external; then
    ping_url || die "external ClickHouse at $CLICKHOUSE_URL does not answer /ping"
    log "using the external server at $CLICKHOUSE_URL"
    migrate; return 0
  fi
  if pid=$(running_pid); then log "already running (pid $pid) on $EMBEDDED_URL"; migrate; return 0; fi
  if port_open "$SWITCHYARD_HOST" "$CLICKHOUSE_PORT"; then
    die "port $CLICKHOUSE_PORT is taken by another process; stop it or set SWITCHYARD_CLICKHOUSE_PORT"
  fi
  mkdir -p "$STATE" "$DATA"
  ensure_password
  log "starting the embedded ClickHouse (chDB) on $EMBEDDED_URL, data in $DATA"
  start_daemon "$STATE/clickhouse.log" "$PYTHON" -m services.dev.clickhouse_http \
    --path "$DATA" --host "$SWITCHYARD_HOST" --port "$CLICKHOUSE_PORT" --grace "$GRACE" \
    ${SERVER_ARGS[@]+"${SERVER_ARGS[@]}"}
  wait_for 60 "ClickHouse" ping_url
  migrate
  log "ready: $EMBEDDED_URL answers /ping and the schema is migrated"
}

stop() {
  if external; then log "external server at $CLICKHOUSE_URL: nothing to stop"; return 0; fi
  stop_daemon $((GRACE + 5))
}

status() {
  if external; then
    if ping_url; then echo "clickhouse up    external $CLICKHOUSE_URL"; else echo "clickhouse down  external $CLICKHOUSE_URL"; fi
  elif pid=$(running_pid); then echo "clickhouse up    pid $pid  $EMBEDDED_URL  (chDB, $DATA)"
  else echo "clickhouse down"; fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
