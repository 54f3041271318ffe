#!/usr/bin/env bash
# Apache Kafka in KRaft mode, single node on loopback: resolve jars (cached), format storage, start, stop.
# usage: kafka.sh fetch|start|stop|status
COMPONENT=kafka
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

HERE=$SWITCHYARD_ROOT/infra/kafka
KAFKA_VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$HERE/pom.xml")
KAFKA_PORT=${SWITCHYARD_KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=${SWITCHYARD_KAFKA_CONTROLLER_PORT:-9093}
KAFKA_HEAP=${SWITCHYARD_KAFKA_HEAP:-768m}
LIBS=$SWITCHYARD_CACHE/kafka-$KAFKA_VERSION/libs
STATE=$SWITCHYARD_VAR/kafka
CONF=$STATE/server.properties

fetch() {
  if [ -f "$LIBS/.complete" ]; then return 0; fi
  command -v mvn >/dev/null || die "Maven (mvn) is needed to resolve Kafka's jars; install it (apt-get install maven)"
  log "resolving Kafka $KAFKA_VERSION from Maven Central into $LIBS"
  rm -rf "$LIBS"
  mvn -q -B -Dstyle.color=never -f "$HERE/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$LIBS"
  touch "$LIBS/.complete"
}

JAVA=(java -Xms256m "-Xmx$KAFKA_HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true
  "-Dkafka.logs.dir=$STATE/logs" "-Dlog4j2.configurationFile=$HERE/log4j2.yaml" -cp "$LIBS/*")

configure() {
  mkdir -p "$STATE/data" "$STATE/logs"
  sed -e "s|@HOST@|$SWITCHYARD_HOST|g" -e "s|@PORT@|$KAFKA_PORT|g" \
      -e "s|@CONTROLLER_PORT@|$KAFKA_CONTROLLER_PORT|g" -e "s|@DATA_DIR@|$STATE/data|g" \
      "$HERE/server.properties.in" > "$CONF"
  if [ ! -f "$STATE/data/meta.properties" ]; then
    local cluster_id
    cluster_id=$("${JAVA[@]}" kafka.tools.StorageTool random-uuid 2>/dev/null)
    log "formatting storage (cluster $cluster_id)"
    "${JAVA[@]}" kafka.tools.StorageTool format -t "$cluster_id" -c "$CONF" --ignore-formatted >>"$STATE/logs/format.log" 2>&1 \
      || die "formatting failed; see $STATE/logs/format.log"
  fi
}

start() {
  if pid=$(running_pid); then log "already running (pid $pid) on $SWITCHYARD_HOST:$KAFKA_PORT"; return 0; fi
  if port_open "$SWITCHYARD_HOST" "$KAFKA_PORT"; then
    die "port $KAFKA_PORT is taken by another process; stop it or set SWITCHYARD_KAFKA_PORT"
  fi
  fetch
  configure
  log "starting Kafka $KAFKA_VERSION on $SWITCHYARD_HOST:$KAFKA_PORT"
  start_daemon "$STATE/logs/stdout.log" "${JAVA[@]}" kafka.Kafka "$CONF"
  wait_for 120 "Kafka" "$PYTHON" -m services.infra.probe kafka "$SWITCHYARD_HOST:$KAFKA_PORT"
  log "ready: committed a transaction with a group's offsets on $SWITCHYARD_HOST:$KAFKA_PORT"
}

status() {
  if pid=$(running_pid); then echo "kafka      up    pid $pid  $SWITCHYARD_HOST:$KAFKA_PORT  (Kafka $KAFKA_VERSION, KRaft)"
  else echo "kafka      down"; fi
}

case "${1:-}" in
  fetch) fetch ;;
  start) start ;;
  stop) stop_daemon 60 ;;
  status) status ;;
  *) echo "usage: $0 fetch|start|stop|status" >&2; exit 2 ;;
esac
