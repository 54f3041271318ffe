#!/usr/bin/env bash
# Apache Kafka in KRaft mode, single node on loopback: resolve jars (cached), format storage, start, stop.
# Listeners: SASL_SSL (SCRAM-SHA-512; certificates and one password per principal made once under
# var/secrets/kafka/, 0600) and, unless SWITCHYARD_KAFKA_PLAINTEXT=false, PLAINTEXT on loopback for a laptop.
# Every start applies the ACLs of services/infra/acls.py (and creates SCRAM users formatted storage lacks).
# usage: kafka.sh fetch|start|stop|status
COMPONENT=kafka
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

HERE=$SWITCHYARD_ROOT/infra/kafka
KAFKA_VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$HERE/pom.xml")
KAFKA_PORT=${SWITCHYARD_KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=${SWITCHYARD_KAFKA_CONTROLLER_PORT:-9093}
KAFKA_SASL_PORT=${SWITCHYARD_KAFKA_SASL_PORT:-9094}
KAFKA_PLAINTEXT=${SWITCHYARD_KAFKA_PLAINTEXT:-true}
SECRETS=$SWITCHYARD_VAR/secrets/kafka
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

# python with the settings of this broker (not whatever the caller's environment points clients at)
kafka_python() {
  env -u SWITCHYARD_KAFKA_PASSWORD_FILE -u SWITCHYARD_KAFKA_CA_FILE -u SWITCHYARD_TOPIC_PREFIX \
    SWITCHYARD_VAR_DIR="$SWITCHYARD_VAR" SWITCHYARD_HOST="$SWITCHYARD_HOST" SWITCHYARD_KAFKA_USERNAME=admin "$@"
}
as_plaintext() {
  kafka_python SWITCHYARD_KAFKA_SECURITY_PROTOCOL=PLAINTEXT SWITCHYARD_KAFKA_BOOTSTRAP="$SWITCHYARD_HOST:$KAFKA_PORT" "$@"
}
as_admin() {
  kafka_python SWITCHYARD_KAFKA_SECURITY_PROTOCOL=SASL_SSL \
    SWITCHYARD_KAFKA_BOOTSTRAP="$SWITCHYARD_HOST:$KAFKA_SASL_PORT" "$@"
}

configure() {
  mkdir -p "$STATE/data" "$STATE/logs"
  kafka_python "$PYTHON" -m services.infra.kafka_secrets ensure
  local listeners="SASL_SSL://$SWITCHYARD_HOST:$KAFKA_SASL_PORT" super="User:admin;User:CN=switchyard-broker"
  local advertised=$listeners inter=SASL_SSL
  if [ "$KAFKA_PLAINTEXT" = true ]; then
    listeners="PLAINTEXT://$SWITCHYARD_HOST:$KAFKA_PORT,$listeners"
    advertised="PLAINTEXT://$SWITCHYARD_HOST:$KAFKA_PORT,$advertised"
    inter=PLAINTEXT super="$super;User:ANONYMOUS"
  fi
  (umask 077 && sed -e "s|@LISTENERS@|$listeners,CONTROLLER://$SWITCHYARD_HOST:$KAFKA_CONTROLLER_PORT|" \
      -e "s|@ADVERTISED@|$advertised|" -e "s|@INTER_BROKER@|$inter|" -e "s|@SUPER_USERS@|$super|" \
      -e "s|@ADMIN_PASSWORD@|$(cat "$SECRETS/admin.password")|" -e "s|@SECRETS@|$SECRETS|g" \
      -e "s|@HOST@|$SWITCHYARD_HOST|g" -e "s|@CONTROLLER_PORT@|$KAFKA_CONTROLLER_PORT|g" \
      -e "s|@DATA_DIR@|$STATE/data|g" "$HERE/server.properties.in" > "$CONF")
  if [ ! -f "$STATE/data/meta.properties" ]; then
    local cluster_id scram=()
    cluster_id=$("${JAVA[@]}" kafka.tools.StorageTool random-uuid 2>/dev/null)
    while read -r user; do scram+=(--add-scram "$user"); done < <(kafka_python "$PYTHON" -m services.infra.kafka_secrets scram-args)
    log "formatting storage (cluster $cluster_id, $((${#scram[@]} / 2)) SCRAM users)"
    "${JAVA[@]}" kafka.tools.StorageTool format -t "$cluster_id" -c "$CONF" --ignore-formatted "${scram[@]}" \
      >>"$STATE/logs/format.log" 2>&1 || die "formatting failed; see $STATE/logs/format.log"
  fi
}

listening() {
  local sasl="SASL_SSL $SWITCHYARD_HOST:$KAFKA_SASL_PORT"
  if [ "$KAFKA_PLAINTEXT" = true ]; then echo "PLAINTEXT $SWITCHYARD_HOST:$KAFKA_PORT, $sasl"; else echo "$sasl"; fi
}

start() {
  if pid=$(running_pid); then log "already running (pid $pid): $(listening)"; return 0; fi
  if [ "$KAFKA_PLAINTEXT" = true ] && port_open "$SWITCHYARD_HOST" "$KAFKA_PORT"; then
    die "port $KAFKA_PORT is taken by another process; stop it or set SWITCHYARD_KAFKA_PORT"
  fi
  if port_open "$SWITCHYARD_HOST" "$KAFKA_SASL_PORT"; then
    die "port $KAFKA_SASL_PORT is taken by another process; stop it or set SWITCHYARD_KAFKA_SASL_PORT"
  fi
  fetch
  configure
  log "starting Kafka $KAFKA_VERSION: $(listening)"
  start_daemon "$STATE/logs/stdout.log" "${JAVA[@]}" kafka.Kafka "$CONF"
  if [ "$KAFKA_PLAINTEXT" = true ]; then
    wait_for 120 "Kafka" as_plaintext "$PYTHON" -m services.infra.probe kafka "$SWITCHYARD_HOST:$KAFKA_PORT"
    # the loopback listener's ANONYMOUS is a super user: it also creates the SCRAM users that storage formatted
    # before them lacks (without that listener, such storage has no admin to log in as: start once with it)
    as_plaintext "$PYTHON" -m services.infra.acls apply | tail -1
  fi
  wait_for 120 "Kafka (SASL_SSL)" as_admin "$PYTHON" -m services.infra.probe kafka "$SWITCHYARD_HOST:$KAFKA_SASL_PORT"
  if [ "$KAFKA_PLAINTEXT" != true ]; then as_admin "$PYTHON" -m services.infra.acls apply | tail -1; fi
  log "ready: committed a transaction with a group's offsets on $SWITCHYARD_HOST:$KAFKA_SASL_PORT (SASL_SSL as admin)"
}

status() {
  if pid=$(running_pid); then
    echo "kafka      up    pid $pid  $(listening)  (Kafka $KAFKA_VERSION, KRaft)"
  else echo "kafka      down"; fi
}

case "${1:-}" in
  fetch) fetch ;;
  start) start ;;
  stop) stop_daemon 60 ;;
  status) status ;;
  *) echo "usage: $0 fetch|start|stop|status" >&2; exit 2 ;;
esac
