#!/usr/bin/env bash
# HTTP load benchmark: `keel serve` against the same page counter on
# tower-sessions (SqliteStore on a file, PostgresStore, RedisStore, and
# MemoryStore), over real HTTP on loopback, in one sitting.
#
# Usage (from anywhere):
#
#     bench/run.sh                      # 3 rounds, 3 s warm-up, 10 s per phase
#     ROUNDS=5 DURATION=20 bench/run.sh
#     SYSTEMS="keel ts-sqlite" bench/run.sh
#     SYSTEMS="keel-pg ts-postgres" bench/run.sh     # the PostgreSQL pair
#     SYSTEMS="keel-redis ts-redis" bench/run.sh     # the Redis pair
#     CARGO_TARGET_DIR=/tmp/tb bench/run.sh  # this package built in /tmp/tb
#
# What it does:
#   1. builds `keel` (the workspace's keel-cli, in KEEL_TARGET_DIR) and this
#      package's `anchor` and `loadgen` (in BENCH_TARGET_DIR) in release
#      (JOBS=1 by default: the machine is shared), and copies the three
#      binaries aside so a concurrent rebuild cannot swap them mid-run;
#   2. for each round, for each system (the order rotates every round, so no
#      system always runs first or last):
#        keel         keel serve --db FILE     (redb, durable group commit)
#        keel-memory  keel serve --memory      (RAM container)
#        ts-sqlite    anchor --store sqlite    (tower-sessions-sqlx-store,
#                                               file on disk, sqlx defaults)
#        ts-sqlite-wal  the same with --sqlite-wal (journal_mode=WAL,
#                                               synchronous still FULL)
#        ts-memory    anchor --store memory    (tower-sessions MemoryStore)
#        keel-lib     anchor --store keel      (Keel's library on redb, without
#                                               keel serve's extras; not in the
#                                               default SYSTEMS)
#        keel-pg      keel serve --db postgres://.../DB  (Keel's PostgreSQL
#                                               container: pool of 8, group
#                                               commit; not in the default)
#        ts-postgres  anchor --store postgres  (tower-sessions-sqlx-store's
#                                               PostgresStore, sqlx's default
#                                               pool of 10; not in the default)
#        keel-redis   keel serve --db redis://.../6?prefix=P  (Keel's Redis
#                                               container: one script per
#                                               commit, checked versions; not
#                                               in the default)
#        ts-redis     anchor --store redis     (tower-sessions-redis-store's
#                                               RedisStore, fred pool of 6 as
#                                               its README; not in the default)
#      starts the server on a free loopback port (fresh data file, fresh
#      PostgreSQL database, or fresh Redis key space), then
#        POST phase: CONNS connections each POST once for their own cookie,
#                    then POST /api/count for WARMUP + DURATION seconds;
#        GET phase:  the same sessions, GET /api/count, WARMUP + DURATION s;
#        race:       `loadgen race`: a new session, RACE_CLIENTS (32)
#                    connections POST /api/count with its cookie at once;
#                    lost = RACE_CLIENTS - (final - initial count) (keel
#                    serve: must be 0 with every answer 200, or the run
#                    fails; tower-sessions keeps the last writer's count,
#                    ~31 lost, which is only reported);
#      checks after each phase that every session holds exactly its
#      acknowledged count, stops the server (SIGTERM), and for the durable
#      systems (redb file, PostgreSQL, SQLite, Redis) starts it again on the
#      same file or database and checks every session still holds its
#      acknowledged count (every acknowledged write durable; for Redis: out
#      of the app's process, in Redis's memory, which survives the app's
#      restart, not Redis's own unless Redis persists).
#      The PostgreSQL systems need a PostgreSQL server at PG_URL (default
#      postgres://postgres@127.0.0.1:5432, trust auth) and `psql`: each round
#      creates a fresh database keel_bench_<system>_r<round> (the restart
#      reuses it; dropped WITH (FORCE) after the round, and on exit), and
#      loadgen also measures the CPU of every `postgres` process of user
#      PG_OS_USER (postgres) over each phase.
#      The Redis systems need a Redis server at REDIS_URL (default
#      redis://127.0.0.1:6379, no database number: the script adds it) on
#      this machine, and `redis-cli`. Other clients may share that Redis, so
#      the script never flushes anything: keel-redis runs in database
#      REDIS_KEEL_DB (6) under a fresh key prefix per round,
#      keel_bench_<round>_<random> (the restart reuses it; its keys, P:*, are
#      deleted after the round and on exit); tower-sessions' RedisStore
#      keeps each session under its bare id (22 characters of base64url, no
#      prefix), so ts-redis gets a database of its own, REDIS_TS_DB (5), and
#      before and after each round (and on exit) the script deletes the keys
#      of that database that look like such ids, and only those. loadgen
#      measures the CPU of the redis-server process (pid from INFO server;
#      utime + stime of all its threads) over each phase;
#   3. prints the comparison table (medians over rounds, ratios vs targets).
#      Columns: req/s and latency of each phase; errors; lost updates (the
#      per-session check); race lost (200 answers) per round; durable after
#      restart; CPU % of one core of the app server / database server (db) /
#      loadgen; `app µs/req` and `db µs/req`: CPU-microseconds per measured
#      request of the app server and of the database server: for PostgreSQL
#      the whole server (postmaster, backends, background processes; backends
#      that exit during a phase still count, through the postmaster's
#      reaped-children times), for Redis the redis-server process (`pg
#      µs/req` before Redis; older results files still read). On a 2-core
#      machine app, database and loadgen compete for the cores: the two
#      µs/req columns show which side a request's cost is on.
#
# Environment: ROUNDS (3), WARMUP (3), DURATION (10), CONNS (64), JOBS (1),
# SYSTEMS ("keel keel-memory ts-sqlite ts-sqlite-wal ts-memory"),
# RACE_CLIENTS (32), PG_URL (postgres://postgres@127.0.0.1:5432, no database:
# the script adds it), PG_OS_USER (postgres: owner of PostgreSQL's
# processes), PG_SETTINGS (name=value ..., set on each round's database with
# ALTER DATABASE, for experiments: e.g. plan_cache_mode=force_generic_plan;
# default none), REDIS_URL (redis://127.0.0.1:6379, no database number),
# REDIS_KEEL_DB (6) and REDIS_TS_DB (5) (the Redis database numbers of
# keel-redis and ts-redis), KEEL_BIN (a prebuilt keel to measure instead of
# building one), DATA_DIR (bench/data, on disk: not tmpfs), KEEL_TARGET_DIR
# (where keel-cli is built: the workspace's target/), BENCH_TARGET_DIR
# (where this package is built: CARGO_TARGET_DIR if set, else bench/target/;
# CARGO_TARGET_DIR applies to this package only).
# Per-run output lands in DATA_DIR/<timestamp>/ (server logs, results.jsonl,
# table.md). The load generator and the servers (and PostgreSQL) share the
# machine's cores: read the CPU columns before trusting a small difference.
# PostgreSQL's CPU is the whole server's: another client's load on the same
# PostgreSQL counts too (loadgen warns when other databases' backends used
# CPU during a phase); so is Redis's (no such warning: look at INFO
# commandstats if in doubt).
set -euo pipefail

ROUNDS=${ROUNDS:-3}
WARMUP=${WARMUP:-3}
DURATION=${DURATION:-10}
CONNS=${CONNS:-64}
JOBS=${JOBS:-1}
SYSTEMS=${SYSTEMS:-"keel keel-memory ts-sqlite ts-sqlite-wal ts-memory"}
RACE_CLIENTS=${RACE_CLIENTS:-32}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432}
PG_URL=${PG_URL%/}
PG_OS_USER=${PG_OS_USER:-postgres}
PG_SETTINGS=${PG_SETTINGS:-}
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
REDIS_URL=${REDIS_URL%/}
REDIS_KEEL_DB=${REDIS_KEEL_DB:-6}
REDIS_TS_DB=${REDIS_TS_DB:-5}

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH/.." && pwd)
DATA_DIR=${DATA_DIR:-$BENCH/data}
OUT="$DATA_DIR/$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"
RESULTS="$OUT/results.jsonl"
read -r -a SYSTEM_LIST <<<"$SYSTEMS"

# pg_system SYSTEM: does SYSTEM keep its sessions in PostgreSQL?
pg_system() { [[ $1 == keel-pg || $1 == ts-postgres ]]; }

NEEDS_PG=0
for system in "${SYSTEM_LIST[@]}"; do
  if pg_system "$system"; then NEEDS_PG=1; fi
done
# pg_admin SQL: run SQL on the server's `postgres` database.
pg_admin() { PGOPTIONS="-c client_min_messages=warning" psql "$PG_URL/postgres" -v ON_ERROR_STOP=1 -qAt -c "$1"; }
if ((NEEDS_PG)); then
  if ! command -v psql >/dev/null; then
    echo "the PostgreSQL systems need psql" >&2
    exit 1
  fi
  if ! PG_VERSION=$(pg_admin 'SHOW server_version'); then
    echo "no PostgreSQL server at $PG_URL" >&2
    exit 1
  fi
fi

# redis_system SYSTEM: does SYSTEM keep its sessions in Redis?
redis_system() { [[ $1 == keel-redis || $1 == ts-redis ]]; }

NEEDS_REDIS=0
for system in "${SYSTEM_LIST[@]}"; do
  if redis_system "$system"; then NEEDS_REDIS=1; fi
done
# redis_cmd DB ARGS...: redis-cli on database DB of REDIS_URL.
redis_cmd() {
  local db=$1
  shift
  redis-cli -u "$REDIS_URL/$db" --no-auth-warning "$@"
}
# redis_info FIELD: a field of INFO (database 0: INFO is server-wide).
redis_info() { redis_cmd 0 INFO | tr -d '\r' | sed -n "s/^$1://p"; }
# Deletes, in one atomic script, the keys that SCAN MATCH ARGV[1] finds
# and, unless ARGV[2] is empty, whose whole name matches the Lua pattern
# ARGV[2]; answers how many it deleted. Never FLUSHDB or FLUSHALL: other
# clients may keep keys in the same Redis, even in the same database.
REDIS_DELETE_SCRIPT="local cursor, n = '0', 0
repeat
  local r = redis.call('SCAN', cursor, 'MATCH', ARGV[1], 'COUNT', 1000)
  cursor = r[1]
  for _, k in ipairs(r[2]) do
    if ARGV[2] == '' or string.match(k, ARGV[2]) then
      redis.call('DEL', k)
      n = n + 1
    end
  end
until cursor == '0'
return n"
# The keys of the running round's Redis system: database, SCAN pattern, Lua
# pattern (see REDIS_DELETE_SCRIPT); deleted after the round and on exit.
REDIS_KEYS=()
# redis_delete DB MATCH LUA_PATTERN: delete those keys (see above).
redis_delete() {
  local deleted
  deleted=$(redis_cmd "$1" EVAL "$REDIS_DELETE_SCRIPT" 0 "$2" "$3")
  if [[ ! $deleted =~ ^[0-9]+$ ]]; then
    echo "deleting the keys $2 of Redis database $1 failed: $deleted" >&2
    return 1
  fi
}
drop_redis_keys() {
  if ((${#REDIS_KEYS[@]})); then
    redis_delete "${REDIS_KEYS[@]}" || true
    REDIS_KEYS=()
  fi
}
# tower-sessions' session ids: 16 bytes in base64url without padding.
TS_ID_MATCH=$(printf '?%.0s' $(seq 1 22))
TS_ID_LUA='^[%w_%-]+$'
if ((NEEDS_REDIS)); then
  if ! command -v redis-cli >/dev/null; then
    echo "the Redis systems need redis-cli" >&2
    exit 1
  fi
  if [[ $REDIS_KEEL_DB == "$REDIS_TS_DB" ]]; then
    echo "REDIS_KEEL_DB and REDIS_TS_DB must differ" >&2
    exit 1
  fi
  if [[ $(redis_cmd 0 PING 2>&1) != PONG ]]; then
    echo "no Redis server at $REDIS_URL" >&2
    exit 1
  fi
  REDIS_VERSION=$(redis_info redis_version)
  REDIS_PID=$(redis_info process_id)
  if [[ $(cat "/proc/$REDIS_PID/comm" 2>/dev/null) != redis-server ]]; then
    echo "the Redis at $REDIS_URL (pid $REDIS_PID) is not a redis-server process of this machine: its CPU cannot be measured" >&2
    exit 1
  fi
fi

# keel-cli in the workspace's own target dir (shared with the workspace's
# builds, as before); this package in CARGO_TARGET_DIR if set, so a private
# target dir for the bench never forces a second build of the workspace.
WS_TARGET=${KEEL_TARGET_DIR:-$ROOT/target}
BENCH_TARGET=${BENCH_TARGET_DIR:-${CARGO_TARGET_DIR:-$BENCH/target}}
echo "== building (release, -j$JOBS; keel in $WS_TARGET, bench in $BENCH_TARGET)"
# KEEL_BIN: a keel binary built elsewhere (an older commit, for a before and
# after comparison with the same load generator); then keel is not built.
if [[ -z ${KEEL_BIN:-} ]]; then
  CARGO_TARGET_DIR=$WS_TARGET cargo build --release -j"$JOBS" --manifest-path "$ROOT/Cargo.toml" -p keel-cli
  KEEL_BIN=$WS_TARGET/release/keel
fi
CARGO_TARGET_DIR=$BENCH_TARGET cargo build --release -j"$JOBS" --manifest-path "$BENCH/Cargo.toml"
mkdir -p "$OUT/bin"
cp "$KEEL_BIN" "$BENCH_TARGET/release/anchor" "$BENCH_TARGET/release/loadgen" "$OUT/bin/"
KEEL="$OUT/bin/keel"
ANCHOR="$OUT/bin/anchor"
LOADGEN="$OUT/bin/loadgen"

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet HEAD -- 2>/dev/null || echo ' (work tree has uncommitted changes)')"
  echo "cpu: $(nproc) x $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  echo "kernel: $(uname -sr)"
  echo "disk of DATA_DIR: $(df -T "$DATA_DIR" | awk 'NR==2 {print $1, $2}')"
  echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
  if ((NEEDS_PG)); then
    echo "postgresql: $PG_VERSION at $PG_URL (synchronous_commit=$(pg_admin 'SHOW synchronous_commit'), fsync=$(pg_admin 'SHOW fsync'), max_connections=$(pg_admin 'SHOW max_connections'))"
    if [[ -n $PG_SETTINGS ]]; then echo "per-database settings (PG_SETTINGS): $PG_SETTINGS"; fi
  fi
  if ((NEEDS_REDIS)); then
    echo "redis: $REDIS_VERSION at $REDIS_URL, pid $REDIS_PID (save=\"$(redis_cmd 0 CONFIG GET save | sed -n 2p)\", appendonly=$(redis_cmd 0 CONFIG GET appendonly | sed -n 2p), io-threads=$(redis_cmd 0 CONFIG GET io-threads | sed -n 2p)); keel-redis in database $REDIS_KEEL_DB, ts-redis in $REDIS_TS_DB"
  fi
  echo "rounds=$ROUNDS warmup=${WARMUP}s duration=${DURATION}s connections=$CONNS"
} | tee "$OUT/machine.txt"

SERVER_PID=""
SERVER_URL=""

# start_server LOG CMD...: start CMD, wait for `listening on http://...`.
start_server() {
  local log=$1
  shift
  : >"$log"
  "$@" >"$log" 2>&1 &
  SERVER_PID=$!
  local i
  for i in $(seq 1 300); do
    SERVER_URL=$(sed -n 's/^listening on \(http:\/\/[^ ]*\).*/\1/p' "$log" | head -n1)
    if [[ -n $SERVER_URL ]]; then
      return 0
    fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      echo "server exited early; log:" >&2
      cat "$log" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "server not ready after 30 s; log:" >&2
  cat "$log" >&2
  return 1
}

stop_server() {
  if [[ -n $SERVER_PID ]]; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
  fi
}

# The PostgreSQL database of the running round, if any: dropped on exit.
PG_DB=""
drop_pg_db() {
  if [[ -n $PG_DB ]]; then
    pg_admin "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" || true
    PG_DB=""
  fi
}
cleanup() {
  stop_server
  drop_pg_db
  drop_redis_keys
}
trap cleanup EXIT

# server_cmd SYSTEM DATA: set SERVER_CMD to the command line of SYSTEM's
# server (an array: a Redis URL holds a `?`, never glob-expanded); DATA is a
# file path, or a PostgreSQL or Redis URL for the systems on those.
SERVER_CMD=()
server_cmd() {
  case $1 in
    keel-pg | keel-redis | keel) SERVER_CMD=("$KEEL" serve --db "$2") ;;
    ts-postgres) SERVER_CMD=("$ANCHOR" --store postgres --pg-url "$2") ;;
    ts-redis) SERVER_CMD=("$ANCHOR" --store redis --redis-url "$2") ;;
    keel-memory) SERVER_CMD=("$KEEL" serve --memory) ;;
    ts-sqlite) SERVER_CMD=("$ANCHOR" --store sqlite --db "$2") ;;
    ts-sqlite-wal) SERVER_CMD=("$ANCHOR" --store sqlite --sqlite-wal --db "$2") ;;
    ts-memory) SERVER_CMD=("$ANCHOR" --store memory) ;;
    keel-lib) SERVER_CMD=("$ANCHOR" --store keel --db "$2") ;;
    *)
      echo "unknown system $1" >&2
      return 1
      ;;
  esac
  SERVER_CMD+=(--addr 127.0.0.1:0)
}
# Every system's name is checked before the first round.
for system in "${SYSTEM_LIST[@]}"; do server_cmd "$system" x; done

# durable SYSTEM: is every acknowledged write meant to survive a restart (of
# the app server)?
durable() {
  case $1 in
    keel | keel-lib | keel-pg | keel-redis | ts-sqlite | ts-sqlite-wal | ts-postgres | ts-redis) return 0 ;;
    *) return 1 ;;
  esac
}

FAILED=0
for round in $(seq 1 "$ROUNDS"); do
  n=${#SYSTEM_LIST[@]}
  for k in $(seq 0 $((n - 1))); do
    system=${SYSTEM_LIST[$(((k + round - 1) % n))]}
    state="$OUT/$system-r$round.state"
    db_args=()
    if pg_system "$system"; then
      # A fresh database per round; a leftover of an aborted run goes first.
      PG_DB="keel_bench_${system//-/_}_r$round"
      pg_admin "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)"
      pg_admin "CREATE DATABASE $PG_DB"
      for setting in $PG_SETTINGS; do
        pg_admin "ALTER DATABASE $PG_DB SET ${setting%%=*} = '${setting#*=}'"
      done
      data="$PG_URL/$PG_DB"
      db_args=(--pg-user "$PG_OS_USER" --pg-db "$PG_DB")
    elif redis_system "$system"; then
      if [[ $system == keel-redis ]]; then
        # A fresh key prefix per round, in Keel's database.
        prefix="keel_bench_${round}_$(od -An -N4 -tx4 /dev/urandom | tr -d ' ')"
        REDIS_KEYS=("$REDIS_KEEL_DB" "$prefix:*" "")
        data="$REDIS_URL/$REDIS_KEEL_DB?prefix=$prefix"
      else
        # tower-sessions' ids in its own database; a leftover of an aborted
        # run goes first.
        REDIS_KEYS=("$REDIS_TS_DB" "$TS_ID_MATCH" "$TS_ID_LUA")
        data="$REDIS_URL/$REDIS_TS_DB"
      fi
      redis_delete "${REDIS_KEYS[@]}"
      # Again each round: a restarted Redis has another pid.
      REDIS_PID=$(redis_info process_id)
      db_args=(--db-pid "$REDIS_PID")
    else
      data="$OUT/$system-r$round.db"
    fi
    echo "== round $round: $system"
    server_cmd "$system" "$data"
    start_server "$OUT/$system-r$round.log" "${SERVER_CMD[@]}"
    common=(--url "$SERVER_URL" --state "$state" --system "$system" --round "$round" --results "$RESULTS")
    "$LOADGEN" run "${common[@]}" --method post --fresh --connections "$CONNS" \
      --warmup "$WARMUP" --duration "$DURATION" --server-pid "$SERVER_PID" "${db_args[@]}" || FAILED=1
    "$LOADGEN" run "${common[@]}" --method get --connections "$CONNS" \
      --warmup "$WARMUP" --duration "$DURATION" --server-pid "$SERVER_PID" "${db_args[@]}" || FAILED=1
    # `keel serve` retries conflicts until all 32 increments succeed: none
    # may be lost or refused. tower-sessions loses them (last writer wins)
    # and keel-lib (the library's default of 3 attempts) refuses some with
    # 503: measured and reported, not a failure of the run.
    race_args=()
    case $system in keel | keel-memory | keel-pg | keel-redis) race_args=(--expect-no-loss) ;; esac
    "$LOADGEN" race --url "$SERVER_URL" --system "$system" --round "$round" \
      --results "$RESULTS" --clients "$RACE_CLIENTS" "${race_args[@]}" || FAILED=1
    stop_server
    if durable "$system"; then
      start_server "$OUT/$system-r$round-restart.log" "${SERVER_CMD[@]}"
      "$LOADGEN" verify --url "$SERVER_URL" --state "$state" --system "$system" \
        --round "$round" --results "$RESULTS" || FAILED=1
      stop_server
    fi
    if pg_system "$system"; then
      drop_pg_db
    elif redis_system "$system"; then
      drop_redis_keys
    else
      rm -f "$data" "$data-wal" "$data-shm" "$data-journal"
    fi
  done
done

echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/machine.txt"
echo
"$LOADGEN" table "$RESULTS" | tee "$OUT/table.md" || FAILED=1
echo
echo "results: $OUT"
exit "$FAILED"
