#!/usr/bin/env bash
# ClickHouse for Switchyard: the embedded chDB owner (services.infra.clickhouse_http) serving ClickHouse's HTTP
# interface on loopback, or, when SWITCHYARD_CLICKHOUSE_URL names another server, a check that it answers.
# Either way `start` ends by applying the migrations in infra/clickhouse/.
# usage: clickhouse.sh start|stop|status
COMPONENT=clickhouse
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

CLICKHOUSE_PORT=${SWITCHYARD_CLICKHOUSE_PORT:-8123}
EMBEDDED_URL="http://$SWITCHYARD_HOST:$CLICKHOUSE_PORT"
CLICKHOUSE_URL=${SWITCHYARD_CLICKHOUSE_URL:-$EMBEDDED_URL}
STATE=$SWITCHYARD_VAR/clickhouse
DATA=${SWITCHYARD_CHDB_PATH:-$STATE/data}
GRACE=${SWITCHYARD_CLICKHOUSE_GRACE:-30}

external() { [ "$CLICKHOUSE_URL" != "$EMBEDDED_URL" ]; }

ping_url() { "$PYTHON" -c 'import sys, urllib.request as u; u.urlopen(sys.argv[1] + "/ping", timeout=2)' "${CLICKHOUSE_URL%/}"; }

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
  log "starting the embedded ClickHouse (chDB) on $EMBEDDED_URL, data in $DATA"
  start_daemon "$STATE/clickhouse.log" "$PYTHON" -m services.infra.clickhouse_http \
    --path "$DATA" --host "$SWITCHYARD_HOST" --port "$CLICKHOUSE_PORT" --grace "$GRACE"
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
