#!/usr/bin/env bash
# Servers of the soak's own, beside the machine's: a RabbitMQ node `cardsync-soak@localhost` on
# 5673 and a PostgreSQL cluster `soak` on 5433 (trust auth on loopback). The soak's broker and
# database faults stop and restart these instead of the servers every other test uses, so a long
# soak can run while the machine does other work:
#   make soak-servers
#   make soak SOAK_ARGS="--seconds 3600 --amqp-url amqp://guest:guest@127.0.0.1:5673/%2f \
#     --rabbitmq-node cardsync-soak@localhost \
#     --postgres-url postgres://postgres@127.0.0.1:5433/postgres --postgres-cluster soak"
# Needs Debian's rabbitmq-server and postgresql (`make services` installs them). Idempotent.
set -euo pipefail

log() { printf 'soak-servers: %s\n' "$*" >&2; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() { # name port seconds
  local deadline=$((SECONDS + $3))
  until port_open "$2"; do
    if ((SECONDS > deadline)); then log "$1 did not open port $2 within $3 s"; return 1; fi
    sleep 0.5
  done
}
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

NODE=cardsync-soak@localhost
BASE=/var/tmp/cardsync-soak-rabbitmq

start_rabbitmq() {
  if port_open 5673; then return; fi
  $SUDO mkdir -p "$BASE"
  # A configuration of its own: the machine's rabbitmq.conf pins the listener to 5672.
  printf 'listeners.tcp.local = 127.0.0.1:5673\nloopback_users = none\n' | $SUDO tee "$BASE/rabbitmq.conf" >/dev/null
  echo '[].' | $SUDO tee "$BASE/enabled_plugins" >/dev/null
  $SUDO chown -R rabbitmq:rabbitmq "$BASE" 2>/dev/null || true
  log "starting RabbitMQ node $NODE on 5673"
  $SUDO env RABBITMQ_NODENAME="$NODE" RABBITMQ_NODE_PORT=5673 RABBITMQ_DIST_PORT=25673 \
    RABBITMQ_CONFIG_FILE="$BASE/rabbitmq.conf" RABBITMQ_ENABLED_PLUGINS_FILE="$BASE/enabled_plugins" \
    RABBITMQ_MNESIA_BASE="$BASE/mnesia" RABBITMQ_LOG_BASE="$BASE/log" \
    RABBITMQ_PID_FILE="$BASE/pid" rabbitmq-server -detached
  wait_port "RabbitMQ ($NODE)" 5673 120
  $SUDO rabbitmqctl -n "$NODE" await_startup --timeout 120 >/dev/null
}

start_postgres() {
  if port_open 5433; then return; fi
  local version
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  if ! $SUDO pg_lsclusters -h | awk '{print $2}' | grep -qx soak; then
    log "creating PostgreSQL cluster $version/soak on 5433"
    $SUDO pg_createcluster "$version" soak --port 5433 -- --auth-host=trust --auth-local=trust >/dev/null
  fi
  log "starting PostgreSQL $version/soak"
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" soak start
  wait_port "PostgreSQL (soak)" 5433 60
}

start_rabbitmq
start_postgres
log "RabbitMQ $NODE :5673 and PostgreSQL soak :5433 are up"
