#!/usr/bin/env bash
# A three-master Redis Cluster on loopback for the tests (and for trying
# `keel serve --db redis+cluster://...` by hand):
#
#     scripts/redis-cluster.sh start   # idempotent: does nothing if it is up
#     scripts/redis-cluster.sh stop
#
# Nodes listen on 127.0.0.1, ports $KEEL_REDIS_CLUSTER_PORTS (default
# 17001 17002 17003; the cluster bus on port + 10000), keep their files in
# $KEEL_REDIS_CLUSTER_DIR (default ${TMPDIR:-/tmp}/keel-redis-cluster), and
# persist nothing (no RDB, no AOF): test data only. The tests' URL is then
# redis+cluster://127.0.0.1:17001,127.0.0.1:17002,127.0.0.1:17003.
set -euo pipefail

PORTS=(${KEEL_REDIS_CLUSTER_PORTS:-17001 17002 17003})
DIR=${KEEL_REDIS_CLUSTER_DIR:-${TMPDIR:-/tmp}/keel-redis-cluster}

cli() { redis-cli -h 127.0.0.1 -p "$1" "${@:2}"; }
answers() { [[ $(cli "$1" ping 2>/dev/null) == PONG ]]; }
state_ok() {
  local port
  for port in "${PORTS[@]}"; do
    cli "$port" cluster info 2>/dev/null | tr -d '\r' | grep -qx 'cluster_state:ok' || return 1
  done
}

start() {
  if state_ok; then
    echo "Redis Cluster up on ports ${PORTS[*]}"
    return 0
  fi
  command -v redis-server >/dev/null || {
    echo "redis-server is not installed: cannot start a Redis Cluster" >&2
    exit 1
  }
  local port
  for port in "${PORTS[@]}"; do
    if ! answers "$port"; then
      mkdir -p "$DIR/$port"
      redis-server --port "$port" --bind 127.0.0.1 --daemonize yes \
        --cluster-enabled yes --cluster-config-file "$DIR/$port/nodes.conf" \
        --cluster-node-timeout 2000 --dir "$DIR/$port" --save "" --appendonly no \
        --logfile "$DIR/$port/redis.log" --pidfile "$DIR/$port/redis.pid"
    fi
  done
  for port in "${PORTS[@]}"; do
    for _ in $(seq 1 50); do answers "$port" && break; sleep 0.1; done
    answers "$port" || {
      echo "Redis Cluster node on port $port did not start; see $DIR/$port/redis.log" >&2
      exit 1
    }
  done
  # Nodes that know no cluster (or a broken one, say after some were
  # restarted without their peers) are reset and joined afresh: it holds
  # test data only.
  if ! state_ok; then
    for port in "${PORTS[@]}"; do
      cli "$port" flushall >/dev/null 2>&1 || true
      cli "$port" cluster reset hard >/dev/null
    done
    local nodes=()
    for port in "${PORTS[@]}"; do nodes+=("127.0.0.1:$port"); done
    redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >/dev/null
  fi
  for _ in $(seq 1 100); do
    if state_ok; then
      echo "Redis Cluster up on ports ${PORTS[*]}"
      return 0
    fi
    sleep 0.1
  done
  echo "Redis Cluster on ports ${PORTS[*]} did not reach cluster_state:ok" >&2
  exit 1
}

stop() {
  local port
  for port in "${PORTS[@]}"; do
    cli "$port" shutdown nosave >/dev/null 2>&1 || true
  done
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
