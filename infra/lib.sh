# Shared by the infra scripts: where state and caches live, and how a background process is run.
# Every path and port can be overridden from the environment; defaults suit one dev box or CI runner.
set -euo pipefail

SWITCHYARD_ROOT=${SWITCHYARD_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
SWITCHYARD_VAR=${SWITCHYARD_VAR_DIR:-${SWITCHYARD_VAR:-$SWITCHYARD_ROOT/var}}  # as services/settings.py reads them
SWITCHYARD_CACHE=${SWITCHYARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/switchyard}
SWITCHYARD_HOST=${SWITCHYARD_HOST:-127.0.0.1}
PYTHON=${PYTHON:-$SWITCHYARD_ROOT/.venv/bin/python}
mkdir -p "$SWITCHYARD_VAR" "$SWITCHYARD_CACHE"

log() { printf '[%s] %s\n' "$COMPONENT" "$*" >&2; }
die() { log "error: $*"; exit 1; }

pidfile() { echo "$SWITCHYARD_VAR/$COMPONENT/$COMPONENT.pid"; }

running_pid() {
  local f; f=$(pidfile)
  [ -f "$f" ] || return 1
  local pid; pid=$(cat "$f")
  kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

# start_daemon LOGFILE CMD...: runs CMD in its own session, detached, and records its pid.
start_daemon() {
  local logfile=$1; shift
  mkdir -p "$(dirname "$(pidfile)")"
  setsid "$@" >>"$logfile" 2>&1 < /dev/null &
  echo $! > "$(pidfile)"
}

# stop_daemon SECONDS: SIGTERM, wait for a clean exit, SIGKILL only past the grace period.
stop_daemon() {
  local grace=$1 pid
  if ! pid=$(running_pid); then
    log "not running"; rm -f "$(pidfile)"; return 0
  fi
  kill -TERM "$pid"
  local waited=0
  while kill -0 "$pid" 2>/dev/null; do
    if [ "$waited" -ge $((grace * 10)) ]; then
      log "did not stop within ${grace}s; killing pid $pid"
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.1; waited=$((waited + 1))
  done
  rm -f "$(pidfile)"
  log "stopped (pid $pid)"
}

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# wait_for SECONDS DESCRIPTION CMD...: polls CMD until it succeeds or the time is up.
wait_for() {
  local seconds=$1 what=$2; shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if ! running_pid >/dev/null; then die "$what: the process exited; see its log under $SWITCHYARD_VAR/$COMPONENT"; fi
    if [ "$SECONDS" -ge "$deadline" ]; then die "$what: not ready after ${seconds}s; see its log under $SWITCHYARD_VAR/$COMPONENT"; fi
    sleep 0.2
  done
}
