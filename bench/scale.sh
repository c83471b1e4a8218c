#!/usr/bin/env bash
# Refresh throughput against the number of stored sessions: for each size in SIZES, a SQLite
# file seeded by sessiond-seed with that many sessions (one user each), a release
# `sessiond serve` on a copy of it (defaults except SESSIOND_RATE_LIMITS=off), and the same wrk
# run: `wrk -t2 -c32` for WARMUP, then DURATION, with bench/wrk/refresh-chain.lua over ACTIVE
# sessions spread evenly through the file (each request spends one token and the run follows
# the rotation, so every size refreshes the same number of sessions and only the stored count
# differs). Prints one line per size: refresh/s, p50, p99, non-2xx, server CPU per refresh
# (over the measured run), server RSS after the run, database size (file + WAL, as seeded) and
# bytes per session, seeding time; then the ratios of the last size to the first.
#
#   bench/scale.sh
#   SIZES="10000 300000" DURATION=2s WARMUP=1s bench/scale.sh     # a quick run
#   SEED_DIR=/var/tmp/sessiond-seeds bench/scale.sh                # seed once, reuse after
#
# Settings (environment):
#   SIZES        stored sessions per run (default "10000 1000000")
#   ACTIVE       sessions the run refreshes (default 10000; at most the smallest size)
#   WARM_TOKENS  of those, the ones the warm-up refreshes (default 2000)
#   SEED_DIR     keep each seeded file (sessions-N/) here and start later runs from a copy of
#                it; by default each run seeds into a temporary directory
#   SIGNING_ALG (EdDSA), SYNCHRONOUS (full): the server's SESSIOND_SIGNING_ALG and
#                SESSIOND_SQLITE_SYNCHRONOUS
#   DURATION (10s), WARMUP (3s), THREADS (2), CONNS (32): the wrk runs
#
# Seeding 1,000,000 sessions takes minutes (sessiond-seed prints its rate). Needs
# `cargo build --release -p sessiond-server -p sessiond-load` and wrk. Everything listens on
# 127.0.0.1 and stops when the script ends.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

SIZES=${SIZES:-"10000 1000000"}
ACTIVE=${ACTIVE:-10000}
WARM_TOKENS=${WARM_TOKENS:-2000}
SIGNING_ALG=${SIGNING_ALG:-EdDSA}
SYNCHRONOUS=${SYNCHRONOUS:-full}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-3s}
THREADS=${THREADS:-2}
CONNS=${CONNS:-32}
SEED_DIR=${SEED_DIR:-}
for size in $SIZES; do
  if ((size < ACTIVE)); then echo "size $size is below ACTIVE=$ACTIVE" >&2; exit 2; fi
done
if ((WARM_TOKENS >= ACTIVE)); then echo "WARM_TOKENS must be below ACTIVE" >&2; exit 2; fi
require_release_build
require_wrk

bench_workdir

hz=$(getconf CLK_TCK)
rss_mib() { awk '/VmRSS/{printf "%.1f", $2 / 1024}' "/proc/$1/status"; }
json_field() { sed -n "s/.*\"$2\":\([0-9.]*\).*/\1/p" <<<"$1"; }

key="scale-bench-admin-key-0123456789-abcdefghijklmnop"
export SESSIOND_ADMIN_KEYS=$key SESSIOND_ISSUER=http://bench \
  SESSIOND_SIGNING_ALG=$SIGNING_ALG
bench_log_env
lines=()
for size in $SIZES; do
  seeded=${SEED_DIR:-$work}/sessions-$size
  seed_once "$seeded" "$size" tokens.txt --tokens "$ACTIVE"
  seed=$(cat "$seeded/seed.json")
  run=$work/run-$size
  rm -rf "$run"
  mkdir -p "$run"
  copy_seeded "$seeded" "$run"
  if (($(wc -l <"$seeded/tokens.txt") < ACTIVE)); then
    echo "$seeded was seeded with fewer than ACTIVE=$ACTIVE tokens; remove it to seed again" >&2
    exit 2
  fi
  head -n "$WARM_TOKENS" "$seeded/tokens.txt" >"$run/warm.txt"
  head -n "$ACTIVE" "$seeded/tokens.txt" | tail -n +"$((WARM_TOKENS + 1))" >"$run/tokens.txt"

  serve_sqlite "$run"
  rss_start=$(rss_mib "$server")
  run_wrk() { # tokens-file duration
    TOKENS_FILE=$1 WRK_THREADS=$THREADS wrk -t"$THREADS" -c"$CONNS" -d"$2" --latency \
      -s bench/wrk/refresh-chain.lua "http://127.0.0.1:$port"
  }
  run_wrk "$run/warm.txt" "$WARMUP" >"$run/warm-wrk.txt" 2>&1
  ticks_before=$(cpu_ticks "$server")
  run_wrk "$run/tokens.txt" "$DURATION" >"$run/wrk.txt" 2>&1
  ticks_after=$(cpu_ticks "$server")
  result=$(grep ^RESULT "$run/wrk.txt") || { cat "$run/wrk.txt" >&2; exit 1; }
  rss=$(rss_mib "$server")
  kill "$server"; wait "$server" 2>/dev/null || true; server=
  requests=$(field "$result" requests)
  cpu_us=$(awk -v t=$((ticks_after - ticks_before)) -v hz="$hz" -v n="$requests" \
    'BEGIN {printf "%.0f", (n > 0 ? t / hz * 1e6 / n : 0)}')
  db_bytes=$(json_field "$seed" db_bytes)
  line="sessions=$size refresh/s=$(field "$result" rps) p50_ms=$(field "$result" p50_ms) \
p99_ms=$(field "$result" p99_ms) failed=$(field "$result" failed) \
exhausted=$(field "$result" exhausted) cpu_us_per_refresh=$cpu_us rss_mib_start=$rss_start \
rss_mib=$rss db_mib=$(awk -v b="$db_bytes" 'BEGIN {printf "%.1f", b / 1048576}') \
bytes_per_session=$(json_field "$seed" bytes_per_session) \
seed_rate=$(json_field "$seed" rate)/s"
  echo "$line"
  lines+=("$line")
  rm -rf "$run"
done

if ((${#lines[@]} > 1)); then
  first=${lines[0]} last=${lines[${#lines[@]} - 1]}
  awk -v a="$(field "$last" refresh/s)" -v b="$(field "$first" refresh/s)" \
    -v c="$(field "$last" p99_ms)" -v d="$(field "$first" p99_ms)" \
    -v e="$(field "$last" rss_mib)" -v f="$(field "$first" rss_mib)" \
    -v g="$(field "$last" sessions)" -v h="$(field "$first" sessions)" \
    'function r(x, y) { return y > 0 ? sprintf("%.2fx", x / y) : "n/a" }
     BEGIN { printf "ratio %s/%s sessions: refresh/s %s, p99 %s, rss %s\n", g, h,
             r(a, b), r(c, d), r(e, f) }'
fi
