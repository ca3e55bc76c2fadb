#!/usr/bin/env bash
# Makes sure RabbitMQ (5672, guest/guest), Redis (6379) and PostgreSQL (5432, trust auth on
# loopback) answer on their default local ports, installing Debian's packages and starting the
# servers when needed, then creates the cardsync databases. Idempotent: a machine that already
# runs them is left alone.
set -euo pipefail

log() { printf 'services: %s\n' "$*" >&2; }

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

apt_updated=0
apt_install() {
  if [ "$apt_updated" -eq 0 ]; then
    log "apt-get update"
    $SUDO apt-get update -qq >/dev/null
    apt_updated=1
  fi
  log "installing $*"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

ensure_postgres() {
  if port_open 5432; then return; fi
  if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    apt_install postgresql
  fi
  local version
  version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$version" ]; then
    log "no PostgreSQL cluster found under /etc/postgresql"; return 1
  fi
  local hba="/etc/postgresql/$version/main/pg_hba.conf"
  # Local development only: loopback connections are trusted, as on the project's machines.
  if ! grep -Eq '^host\s+all\s+all\s+127\.0\.0\.1/32\s+trust' "$hba"; then
    log "enabling trust auth for loopback in $hba"
    $SUDO sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\nlocal all all trust' "$hba"
  fi
  log "starting PostgreSQL $version"
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  wait_port PostgreSQL 5432 60
}

ensure_redis() {
  if port_open 6379; then return; fi
  command -v redis-server >/dev/null 2>&1 || apt_install redis-server
  log "starting Redis"
  mkdir -p /tmp/cardsync-redis
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /tmp/cardsync-redis --logfile /tmp/cardsync-redis/redis.log
  wait_port Redis 6379 30
}

ensure_rabbitmq() {
  if port_open 5672; then return; fi
  command -v rabbitmq-server >/dev/null 2>&1 || apt_install rabbitmq-server
  log "starting RabbitMQ"
  $SUDO rabbitmq-server -detached
  wait_port RabbitMQ 5672 120
  # The port opens a moment before the broker accepts work; wait for the application itself.
  $SUDO rabbitmqctl await_startup --timeout 120 >/dev/null 2>&1 || true
}

ensure_databases() {
  local db
  for db in cardsync cardsync_test; do
    if ! psql -h 127.0.0.1 -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1; then
      log "creating database $db"
      psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $db" || true
    fi
  done
}

# `make soak`'s network partitions are nftables drop rules on the run's own ports.
ensure_nft() {
  command -v nft >/dev/null 2>&1 || apt_install nftables || log "nftables unavailable: make soak cannot cut the network"
}

ensure_postgres
ensure_redis
ensure_rabbitmq
ensure_databases
ensure_nft
log "RabbitMQ :5672, Redis :6379 and PostgreSQL :5432 are up"
