#!/usr/bin/env bash
# The real Weaviate server, built once from the Go module proxy and cached; run on loopback with no
# vectorizer module (Switchyard supplies its own vectors) and persistence under var/weaviate. Only API-key
# clients get in: the key is SWITCHYARD_WEAVIATE_API_KEY or else var/secrets/weaviate.key, made on the first
# start (mode 0600), which settings.weaviate_api_key reads too. The readiness probe needs no key.
# usage: weaviate.sh fetch|start|stop|status
COMPONENT=weaviate
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

WEAVIATE_VERSION=${SWITCHYARD_WEAVIATE_VERSION:-1.35.2}
HTTP_PORT=${SWITCHYARD_WEAVIATE_HTTP_PORT:-8080}
GRPC_PORT=${SWITCHYARD_WEAVIATE_GRPC_PORT:-50051}
BIN_DIR=$SWITCHYARD_CACHE/weaviate-$WEAVIATE_VERSION
BIN=$BIN_DIR/weaviate-server
STATE=$SWITCHYARD_VAR/weaviate
KEY_FILE=$SWITCHYARD_VAR/secrets/weaviate.key

fetch() {
  if [ -x "$BIN" ]; then return 0; fi
  command -v go >/dev/null || die "the Go toolchain is needed to build Weaviate; install Go 1.24 or newer"
  log "building Weaviate $WEAVIATE_VERSION with $(go version | cut -d' ' -f3) (first time only: a few minutes)"
  mkdir -p "$BIN_DIR"
  local started=$SECONDS
  if ! GOBIN=$BIN_DIR GOFLAGS=-buildvcs=false CGO_ENABLED=0 \
      go install "github.com/weaviate/weaviate/cmd/weaviate-server@v$WEAVIATE_VERSION" >"$BIN_DIR/build.log" 2>&1; then
    tail -20 "$BIN_DIR/build.log" >&2
    die "building Weaviate failed; full log in $BIN_DIR/build.log"
  fi
  log "built in $((SECONDS - started))s: $BIN"
}

# api_key: prints the key clients must present, making the key file once if neither it nor the variable exists
api_key() {
  if [ -n "${SWITCHYARD_WEAVIATE_API_KEY:-}" ]; then echo "$SWITCHYARD_WEAVIATE_API_KEY"; return 0; fi
  if [ ! -s "$KEY_FILE" ]; then
    mkdir -p "$(dirname "$KEY_FILE")"
    # noclobber: of two first starts at once, one writes the key and both use it
    (umask 077; set -o noclobber; od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$KEY_FILE") 2>/dev/null || true
    [ -s "$KEY_FILE" ] || die "cannot write the API key to $KEY_FILE"
    log "API key in $KEY_FILE"
  fi
  tr -d '[:space:]' <"$KEY_FILE"
}

start() {
  if pid=$(running_pid); then log "already running (pid $pid) on $SWITCHYARD_HOST:$HTTP_PORT"; return 0; fi
  if port_open "$SWITCHYARD_HOST" "$HTTP_PORT"; then
    die "port $HTTP_PORT is taken by another process; stop it or set SWITCHYARD_WEAVIATE_HTTP_PORT"
  fi
  fetch
  mkdir -p "$STATE/data" "$STATE/logs"
  # exported, not passed as arguments: the key stays out of `ps` output
  AUTHENTICATION_APIKEY_ALLOWED_KEYS=$(api_key)
  [ -n "$AUTHENTICATION_APIKEY_ALLOWED_KEYS" ] || die "$KEY_FILE is empty; delete it to make a new key"
  export AUTHENTICATION_APIKEY_ALLOWED_KEYS AUTHENTICATION_APIKEY_ENABLED=true AUTHENTICATION_APIKEY_USERS=switchyard
  # the cluster data port listens on every interface and serves objects without the API key: basic auth closes it
  # (one node: no peer needs the password); gossip binds the loopback; Go's profiler (:6060, every interface) is off
  export CLUSTER_BASIC_AUTH_USERNAME=switchyard-cluster CLUSTER_BASIC_AUTH_PASSWORD=$AUTHENTICATION_APIKEY_ALLOWED_KEYS
  log "starting Weaviate $WEAVIATE_VERSION on $SWITCHYARD_HOST:$HTTP_PORT (gRPC $GRPC_PORT)"
  start_daemon "$STATE/logs/weaviate.log" env \
    PERSISTENCE_DATA_PATH="$STATE/data" DEFAULT_VECTORIZER_MODULE=none ENABLE_MODULES="" \
    AUTHENTICATION_ANONYMOUS_ACCESS_ENABLED=false QUERY_DEFAULTS_LIMIT=25 DISABLE_TELEMETRY=true \
    LOG_FORMAT=json LOG_LEVEL=warning GRPC_PORT="$GRPC_PORT" \
    CLUSTER_HOSTNAME=switchyard-1 CLUSTER_ADVERTISE_ADDR="$SWITCHYARD_HOST" CLUSTER_BIND_ADDR="$SWITCHYARD_HOST" \
    GO_PROFILING_DISABLE=true \
    CLUSTER_GOSSIP_BIND_PORT="${SWITCHYARD_WEAVIATE_GOSSIP_PORT:-7946}" \
    CLUSTER_DATA_BIND_PORT="${SWITCHYARD_WEAVIATE_DATA_PORT:-7947}" \
    RAFT_PORT="${SWITCHYARD_WEAVIATE_RAFT_PORT:-8300}" \
    RAFT_INTERNAL_RPC_PORT="${SWITCHYARD_WEAVIATE_RAFT_RPC_PORT:-8301}" RAFT_BOOTSTRAP_EXPECT=1 \
    GOMEMLIMIT="${SWITCHYARD_WEAVIATE_MEMLIMIT:-1GiB}" \
    "$BIN" --host "$SWITCHYARD_HOST" --port "$HTTP_PORT" --scheme http
  wait_for 120 "Weaviate" "$PYTHON" -m services.infra.probe http \
    "http://$SWITCHYARD_HOST:$HTTP_PORT/v1/.well-known/ready"
  log "ready on http://$SWITCHYARD_HOST:$HTTP_PORT"
}

status() {
  if pid=$(running_pid); then echo "weaviate   up    pid $pid  http://$SWITCHYARD_HOST:$HTTP_PORT grpc :$GRPC_PORT  (Weaviate $WEAVIATE_VERSION)"
  else echo "weaviate   down"; fi
}

case "${1:-}" in
  fetch) fetch ;;
  start) start ;;
  stop) stop_daemon 30 ;;
  status) status ;;
  *) echo "usage: $0 fetch|start|stop|status" >&2; exit 2 ;;
esac
