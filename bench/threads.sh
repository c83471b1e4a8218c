#!/usr/bin/env bash
# Where a refresh's server CPU goes, thread by thread: the run of bench/sidebyside.sh (or of
# bench/scale.sh, MODE=chain) against sessiond alone, with each thread's user + system time
# over the measured wrk run read from /proc/PID/task and divided by the refreshes in it.
#
# Prints refresh/s, p99 and the server's CPU per refresh, then µs per refresh for the SQLite
# store's storage thread (sqlite-storage), checkpointer (sqlite-checkpt) and sync thread
# (sqlite-sync), Tokio's threads (tokio-rt-worker) and any other. With PERF_STAT=1 it also
# counts, per refresh and per SQLite thread, the system calls that write and read pages, the
# syncs and the block requests sent to the disk (`perf stat --per-thread` over 5 s of the run).
#
#   bench/threads.sh
#   SEED_DIR=/var/tmp/sessiond-seeds PERF_STAT=1 bench/threads.sh
#   MODE=chain SESSIONS=1000000 SEED_DIR=/var/tmp/sessiond-seeds bench/threads.sh
#
# Settings (environment):
#   MODE         spend (default): each request spends one token of SESSIONS seeded sessions,
#                as bench/sidebyside.sh (bench/wrk/refresh.lua, its SEED_DIR layout
#                sidebyside-ALG-SESSIONS/); chain: ACTIVE sessions spread through SESSIONS
#                refreshed in a chain, as bench/scale.sh (bench/wrk/refresh-chain.lua, its
#                layout sessions-SESSIONS/)
#   SESSIONS     sessions seeded (default 500000)
#   ACTIVE       with MODE=chain, the sessions refreshed (default 10000)
#   SEED_DIR     keep each seeded file here and start every run from a copy of it
#   SIGNING_ALG (EdDSA), SYNCHRONOUS (full), DURATION (10s), WARMUP (3s), THREADS (2),
#   CONNS (32): as bench/sidebyside.sh
#   PERF_STAT=1  also count system calls and block requests (needs perf)
#
# Needs `cargo build --release -p sessiond-server -p sessiond-load` and wrk. Everything listens
# on 127.0.0.1 and stops when the script ends.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

MODE=${MODE:-spend}
SIGNING_ALG=${SIGNING_ALG:-EdDSA}
SYNCHRONOUS=${SYNCHRONOUS:-full}
SESSIONS=${SESSIONS:-500000}
ACTIVE=${ACTIVE:-10000}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-3s}
THREADS=${THREADS:-2}
CONNS=${CONNS:-32}
SEED_DIR=${SEED_DIR:-}
PERF_STAT=${PERF_STAT:-0}
require_release_build
require_wrk
if [[ $PERF_STAT == 1 ]]; then
  command -v perf >/dev/null || { echo "perf missing (PERF_STAT=1)" >&2; exit 2; }
fi

bench_workdir
hz=$(getconf CLK_TCK)

bench_server_env threads
case $MODE in
  spend)
    seeded=$(seeded_dir "sidebyside-$SIGNING_ALG-$SESSIONS")
    seed_once "$seeded" "$SESSIONS" all.txt
    warm_tokens=$((SESSIONS / 5))
    head -n "$warm_tokens" "$seeded/all.txt" >"$work/warm.txt"
    tail -n +"$((warm_tokens + 1))" "$seeded/all.txt" >"$work/tokens.txt"
    script=bench/wrk/refresh.lua
    ;;
  chain)
    seeded=$(seeded_dir "sessions-$SESSIONS")
    seed_once "$seeded" "$SESSIONS" tokens.txt --tokens "$ACTIVE"
    head -n "$((ACTIVE / 5))" "$seeded/tokens.txt" >"$work/warm.txt"
    head -n "$ACTIVE" "$seeded/tokens.txt" | tail -n +"$((ACTIVE / 5 + 1))" >"$work/tokens.txt"
    script=bench/wrk/refresh-chain.lua
    ;;
  *) echo "MODE is spend or chain" >&2; exit 2 ;;
esac
copy_seeded "$seeded" "$work"

serve_sqlite "$work"

run_wrk() { # tokens-file duration [--latency]
  TOKENS_FILE=$1 WRK_THREADS=$THREADS wrk -t"$THREADS" -c"$CONNS" -d"$2" --latency \
    -s "$script" "http://127.0.0.1:$port"
}
# Each thread's CPU ticks: "tid name ticks".
threads() {
  for task in /proc/"$server"/task/*; do
    echo "${task##*/} $(tr ' ' _ <"$task/comm") $(awk '{print $14 + $15}' "$task/stat")"
  done | sort
}

run_wrk "$work/warm.txt" "$WARMUP" >/dev/null
threads >"$work/before"
counting=
if [[ $PERF_STAT == 1 ]]; then
  (sleep 2 && perf stat --per-thread -x, -p "$server" -e syscalls:sys_enter_pwrite64 \
    -e syscalls:sys_enter_pread64 -e syscalls:sys_enter_fdatasync -e block:block_rq_issue \
    -- sleep 5 2>"$work/perf.csv" >/dev/null) &
  counting=$!
fi
run_wrk "$work/tokens.txt" "$DURATION" >"$work/wrk.txt" 2>&1
threads >"$work/after"
[[ -n $counting ]] && wait "$counting"
result=$(grep ^RESULT "$work/wrk.txt")
requests=$(field "$result" requests)
rps=$(field "$result" rps)
kill "$server"; wait "$server" 2>/dev/null || true; server=

echo "sessiond refresh ($MODE, $SIGNING_ALG, synchronous=$SYNCHRONOUS, $SESSIONS sessions, \
-t$THREADS -c$CONNS -d$DURATION): $rps req/s p99 $(field "$result" p99_ms) ms \
non2xx $(field "$result" failed)"
join "$work/before" "$work/after" | awk -v n="$requests" -v hz="$hz" '
  { ticks[$2] += $5 - $3; total += $5 - $3 }
  END {
    us = 1e6 / hz / (n > 0 ? n : 1)
    printf "server cpu/refresh %.0f us:", total * us
    split("sqlite-storage sqlite-checkpt sqlite-sync tokio-rt-worker", order, " ")
    for (i = 1; i <= 4; i++) { printf " %s %.1f", order[i], ticks[order[i]] * us; seen[order[i]] = 1 }
    for (name in ticks) if (!(name in seen)) other += ticks[name]
    printf " other %.1f\n", other * us
  }'
if [[ -n $counting ]]; then
  # perf's CSV: "name-tid,count,,event,...": per refresh over the 5 s at the run's rate.
  awk -F, -v rate="$rps" '$1 ~ /^sqlite-/ && $2 ~ /^[0-9]+$/ {
      sub(/-[0-9]+$/, "", $1); sub(/^.*:/, "", $4); count[$1 " " $4] += $2 }
    END { for (key in count) printf "%s per refresh %.2f\n", key, count[key] / (5 * rate) }' \
    "$work/perf.csv" | sort
fi
if [[ $(field "$result" exhausted) != 0 || $(field "$result" failed) != 0 ]]; then
  echo "invalid run: exhausted tokens or failed requests" >&2
  exit 1
fi
