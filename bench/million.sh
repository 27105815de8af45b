#!/usr/bin/env bash
# A million sessions against twenty thousand (issue 17): `keel serve` on a
# redb file of MANY sessions and on one of FEW, the same counter load on
# each, alternated, in one sitting; prints RSS and req/s with the ratios.
#
#     bench/million.sh                      # 1,020,000 vs 20,000, 2 rounds
#     MANY=200000 ROUNDS=3 bench/million.sh
#
# What it does:
#   1. builds keel (release) and loadgen (this package, release), unless
#      KEEL_BIN / LOADGEN_BIN name prebuilt ones;
#   2. makes the two files with `keel sessions populate` under DATA_DIR
#      (bench/data/million, on disk; kept between runs: delete them to make
#      them anew) and one key ring file both servers use;
#   3. for each round and each file (alternating): starts `keel serve`,
#      records its RSS 1 s and 3 s after start with no request, runs
#      `loadgen run` POST then GET (CONNS connections on CONNS sessions,
#      WARMUP + DURATION s each), records the RSS after each phase, stops it;
#   4. prints a table: per round and file, RSS at start / after POST / after
#      GET, POST and GET req/s, and the MANY/FEW ratios (targets of issue
#      17: POST >= 0.9x, GET >= 0.95x, RSS under load <= 150 MiB).
#
# Environment: MANY (1020000), FEW (20000), ROUNDS (2), CONNS (64), WARMUP
# (2), DURATION (8), DATA_DIR, KEEL_BIN, LOADGEN_BIN, PORT (18600).
# NOTE: CONNS connections use CONNS sessions of their own, not the issue's
# 20,000 active clients (wrk): compare runs of this script with each other.
set -euo pipefail

MANY=${MANY:-1020000}
FEW=${FEW:-20000}
ROUNDS=${ROUNDS:-2}
CONNS=${CONNS:-64}
WARMUP=${WARMUP:-2}
DURATION=${DURATION:-8}
PORT=${PORT:-18600}
BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH/.." && pwd)
DATA_DIR=${DATA_DIR:-$BENCH/data/million}
mkdir -p "$DATA_DIR"

if [[ -z ${KEEL_BIN:-} ]]; then
  (cd "$ROOT" && cargo build --release -q -p keel-cli)
  KEEL_BIN=${KEEL_TARGET_DIR:-$ROOT/target}/release/keel
fi
if [[ -z ${LOADGEN_BIN:-} ]]; then
  (cd "$BENCH" && cargo build --release -q --bin loadgen)
  LOADGEN_BIN=${CARGO_TARGET_DIR:-$BENCH/target}/release/loadgen
fi

RING="$DATA_DIR/ring.key"
for count in "$MANY" "$FEW"; do
  file="$DATA_DIR/sessions-$count.redb"
  if [[ ! -s $file ]]; then
    echo "== populating $file with $count sessions"
    "$KEEL_BIN" sessions populate --db "$file" --count "$count" --expired 0
  fi
done

rss() { echo $(($(awk '/VmRSS/ {print $2}' "/proc/$1/status") / 1024)); }
rate() { sed -n 's/^ *\([0-9]*\) req\/s.*/\1/p' | head -1; }

RESULTS="$DATA_DIR/results-$(date -u +%Y%m%d-%H%M%S).tsv"
printf 'round\tsessions\trss_start_mib\trss_3s_mib\trss_post_mib\trss_get_mib\tpost_rps\tget_rps\n' > "$RESULTS"
for round in $(seq 1 "$ROUNDS"); do
  for count in "$FEW" "$MANY"; do
    file="$DATA_DIR/sessions-$count.redb"
    log="$DATA_DIR/serve-$count-r$round.log"
    "$KEEL_BIN" serve --db "$file" --secret-file "$RING" --addr "127.0.0.1:$PORT" > "$log" 2>&1 &
    pid=$!
    sleep 1
    start=$(rss "$pid")
    sleep 2
    three=$(rss "$pid")
    state="$DATA_DIR/state-$count-r$round"
    rm -f "$state"
    post=$("$LOADGEN_BIN" run --url "http://127.0.0.1:$PORT" --state "$state" --method post --fresh \
      --connections "$CONNS" --warmup "$WARMUP" --duration "$DURATION" --server-pid "$pid" | rate)
    after_post=$(rss "$pid")
    get=$("$LOADGEN_BIN" run --url "http://127.0.0.1:$PORT" --state "$state" --method get \
      --connections "$CONNS" --warmup "$WARMUP" --duration "$DURATION" --server-pid "$pid" | rate)
    after_get=$(rss "$pid")
    kill "$pid"
    wait "$pid" 2> /dev/null || true
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$count" "$start" "$three" "$after_post" \
      "$after_get" "$post" "$get" | tee -a "$RESULTS"
  done
done

echo
echo "| round | sessions | RSS start / 3 s / after POST / after GET (MiB) | POST req/s | GET req/s |"
echo "|---|---|---|---|---|"
awk -F'\t' 'NR > 1 { printf "| %s | %s | %s / %s / %s / %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7, $8 }' "$RESULTS"
echo
echo "| round | POST ${MANY}/${FEW} | GET ${MANY}/${FEW} | target |"
echo "|---|---|---|---|"
awk -F'\t' -v many="$MANY" -v few="$FEW" '
  NR > 1 && $2 == few { fp[$1] = $7; fg[$1] = $8 }
  NR > 1 && $2 == many { mp[$1] = $7; mg[$1] = $8 }
  END {
    for (r in mp) if (fp[r] > 0 && fg[r] > 0)
      printf "| %s | %.2fx | %.2fx | POST >= 0.9x, GET >= 0.95x |\n", r, mp[r] / fp[r], mg[r] / fg[r]
  }' "$RESULTS"
echo
echo "results: $RESULTS"
