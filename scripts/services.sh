#!/usr/bin/env bash
# Starts the servers the tests share, when they are down: PostgreSQL on 127.0.0.1:5432 (trust
# auth for loopback connections, a database `test`) and Redis on 127.0.0.1:6379 (persistence
# off: it holds test data only). Installs postgresql / redis-server with apt-get (as root) when
# missing. Waits for each with a bounded poll; exits non-zero, saying why, if one does not come up.
# Usage: bash scripts/services.sh [postgresql] [redis]     (both when none is named)
# Touches: apt packages; the cluster's pg_hba.conf (trust lines for loopback, only when a
# loopback connection is refused) and database `test`; /var/lib/redis and /var/log/redis.
# Never stops, restarts or empties a server that is running.
# GEYSER_PG_CLUSTER (main), GEYSER_PG_PORT (5432), GEYSER_REDIS_PORT (6379), GEYSER_REDIS_DIR
# and GEYSER_REDIS_LOG choose another cluster, port or folder (tests/python/test_services.py
# starts a Redis of its own this way).
set -euo pipefail

pg_cluster=${GEYSER_PG_CLUSTER:-main}
pg_port=${GEYSER_PG_PORT:-5432}
redis_port=${GEYSER_REDIS_PORT:-6379}
redis_dir=${GEYSER_REDIS_DIR:-/var/lib/redis}
redis_log=${GEYSER_REDIS_LOG:-/var/log/redis/ci.log}
up_within=30  # seconds a server gets to answer after its start command

install_packages() {
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "missing: $*; install it (e.g. sudo apt-get install $*) and run again" >&2
    return 1
  fi
  echo "installing $*"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# wait_until WHAT COMMAND...: runs COMMAND every 0.2 s until it succeeds, for at most $up_within s.
wait_until() {
  local what=$1 deadline=$((SECONDS + up_within))
  shift
  until "$@" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "$what did not answer within ${up_within} s" >&2
      return 1
    fi
    sleep 0.2
  done
}

pg_query() {  # pg_query SQL: one query as the postgres user over loopback TCP, never prompting
  psql -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres -X -w -tA -c "$1"
}

pg_ready() {
  pg_isready -q -h 127.0.0.1 -p "$pg_port"
}

ensure_postgresql() {
  local tool
  for tool in pg_ctlcluster pg_isready psql; do
    command -v "$tool" >/dev/null 2>&1 || { install_packages postgresql; break; }
  done
  local version
  version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -z "$version" ]; then
    echo "no PostgreSQL cluster in /etc/postgresql (create one: pg_createcluster --start VERSION main)" >&2
    return 1
  fi
  if ! pg_ready; then
    echo "starting PostgreSQL $version/$pg_cluster on 127.0.0.1:$pg_port"
    pg_ctlcluster --skip-systemctl-redirect "$version" "$pg_cluster" start
    wait_until "PostgreSQL on 127.0.0.1:$pg_port" pg_ready
  fi
  if ! pg_query 'SELECT 1' >/dev/null 2>&1; then
    local hba=/etc/postgresql/$version/$pg_cluster/pg_hba.conf
    echo "trusting loopback TCP connections in $hba (first lines win)"
    { printf 'host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n'; cat "$hba"; } >"$hba.geyser"
    cat "$hba.geyser" >"$hba" && rm "$hba.geyser"  # keeps the file's owner and mode
    pg_ctlcluster --skip-systemctl-redirect "$version" "$pg_cluster" reload
    wait_until "PostgreSQL with trust auth on 127.0.0.1:$pg_port" pg_query 'SELECT 1'
  fi
  if [ "$(pg_query "SELECT count(*) FROM pg_database WHERE datname = 'test'")" != 1 ]; then
    echo "creating database test"
    pg_query 'CREATE DATABASE test' >/dev/null
  fi
  echo "PostgreSQL: up on 127.0.0.1:$pg_port, database test"
}

redis_ready() {
  [ "$(redis-cli -h 127.0.0.1 -p "$redis_port" ping 2>/dev/null)" = PONG ]
}

ensure_redis() {
  if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
    install_packages redis-server
  fi
  if ! redis_ready; then
    echo "starting Redis on 127.0.0.1:$redis_port"
    mkdir -p "$redis_dir" "$(dirname "$redis_log")"
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$redis_port" --save "" --appendonly no \
      --dir "$redis_dir" --logfile "$redis_log"
    wait_until "Redis on 127.0.0.1:$redis_port (log: $redis_log)" redis_ready
  fi
  echo "Redis: up on 127.0.0.1:$redis_port"
}

services=("$@")
[ ${#services[@]} -gt 0 ] || services=(postgresql redis)
for service in "${services[@]}"; do
  case "$service" in
    postgresql) ensure_postgresql ;;
    redis) ensure_redis ;;
    *) echo "unknown service $service (expected postgresql or redis)" >&2; exit 2 ;;
  esac
done
