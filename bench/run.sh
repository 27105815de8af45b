#!/usr/bin/env bash
# HTTP load benchmark: `keel serve` against the same page counter on
# tower-sessions (SqliteStore on a file, and MemoryStore), over real HTTP on
# loopback, in one sitting.
#
# Usage (from anywhere):
#
#     bench/run.sh                      # 3 rounds, 3 s warm-up, 10 s per phase
#     ROUNDS=5 DURATION=20 bench/run.sh
#     SYSTEMS="keel ts-sqlite" bench/run.sh
#
# What it does:
#   1. builds `keel` (the workspace's keel-cli) and this package's `anchor`
#      and `loadgen` in release (JOBS=1 by default: the machine is shared),
#      and copies the three binaries aside so a concurrent rebuild cannot
#      swap them mid-run;
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
#      starts the server on a free loopback port (fresh data file), then
#        POST phase: CONNS connections each POST once for their own cookie,
#                    then POST /api/count for WARMUP + DURATION seconds;
#        GET phase:  the same sessions, GET /api/count, WARMUP + DURATION s;
#      checks after each phase that every session holds exactly its
#      acknowledged count, stops the server (SIGTERM), and for the file-backed
#      systems starts it again on the same file and checks every session
#      still holds its acknowledged count (every acknowledged write durable);
#   3. prints the comparison table (medians over rounds, ratios vs targets).
#
# Environment: ROUNDS (3), WARMUP (3), DURATION (10), CONNS (64), JOBS (1),
# SYSTEMS (all five), DATA_DIR (bench/data, on disk: not tmpfs), CARGO_TARGET_DIR.
# Per-run output lands in DATA_DIR/<timestamp>/ (server logs, results.jsonl,
# table.md). The load generator and the servers share the machine's cores:
# read the CPU column before trusting a small difference.
set -euo pipefail

ROUNDS=${ROUNDS:-3}
WARMUP=${WARMUP:-3}
DURATION=${DURATION:-10}
CONNS=${CONNS:-64}
JOBS=${JOBS:-1}
SYSTEMS=${SYSTEMS:-"keel keel-memory ts-sqlite ts-sqlite-wal ts-memory"}

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH/.." && pwd)
DATA_DIR=${DATA_DIR:-$BENCH/data}
OUT="$DATA_DIR/$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"
RESULTS="$OUT/results.jsonl"

echo "== building (release, -j$JOBS)"
cargo build --release -j"$JOBS" --manifest-path "$ROOT/Cargo.toml" -p keel-cli
cargo build --release -j"$JOBS" --manifest-path "$BENCH/Cargo.toml"
WS_TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BENCH_TARGET=${CARGO_TARGET_DIR:-$BENCH/target}
mkdir -p "$OUT/bin"
cp "$WS_TARGET/release/keel" "$BENCH_TARGET/release/anchor" "$BENCH_TARGET/release/loadgen" "$OUT/bin/"
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
trap stop_server EXIT

# server_cmd SYSTEM DATAFILE: the command line of SYSTEM's server.
server_cmd() {
  case $1 in
    keel) echo "$KEEL serve --db $2 --addr 127.0.0.1:0" ;;
    keel-memory) echo "$KEEL serve --memory --addr 127.0.0.1:0" ;;
    ts-sqlite) echo "$ANCHOR --store sqlite --db $2 --addr 127.0.0.1:0" ;;
    ts-sqlite-wal) echo "$ANCHOR --store sqlite --sqlite-wal --db $2 --addr 127.0.0.1:0" ;;
    ts-memory) echo "$ANCHOR --store memory --addr 127.0.0.1:0" ;;
    keel-lib) echo "$ANCHOR --store keel --db $2 --addr 127.0.0.1:0" ;;
    *)
      echo "unknown system $1" >&2
      return 1
      ;;
  esac
}

durable() { [[ $1 == keel* && $1 != keel-memory || $1 == ts-sqlite* ]]; }

FAILED=0
read -r -a SYSTEM_LIST <<<"$SYSTEMS"
for round in $(seq 1 "$ROUNDS"); do
  n=${#SYSTEM_LIST[@]}
  for k in $(seq 0 $((n - 1))); do
    system=${SYSTEM_LIST[$(((k + round - 1) % n))]}
    data="$OUT/$system-r$round.db"
    state="$OUT/$system-r$round.state"
    echo "== round $round: $system"
    # shellcheck disable=SC2046
    start_server "$OUT/$system-r$round.log" $(server_cmd "$system" "$data")
    common=(--url "$SERVER_URL" --state "$state" --system "$system" --round "$round" --results "$RESULTS")
    "$LOADGEN" run "${common[@]}" --method post --fresh --connections "$CONNS" \
      --warmup "$WARMUP" --duration "$DURATION" --server-pid "$SERVER_PID" || FAILED=1
    "$LOADGEN" run "${common[@]}" --method get --connections "$CONNS" \
      --warmup "$WARMUP" --duration "$DURATION" --server-pid "$SERVER_PID" || FAILED=1
    stop_server
    if durable "$system"; then
      # shellcheck disable=SC2046
      start_server "$OUT/$system-r$round-restart.log" $(server_cmd "$system" "$data")
      "$LOADGEN" verify --url "$SERVER_URL" --state "$state" --system "$system" \
        --round "$round" --results "$RESULTS" || FAILED=1
      stop_server
    fi
    rm -f "$data" "$data-wal" "$data-shm" "$data-journal"
  done
done

echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/machine.txt"
echo
"$LOADGEN" table "$RESULTS" | tee "$OUT/table.md" || FAILED=1
echo
echo "results: $OUT"
exit "$FAILED"
