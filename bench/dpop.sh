#!/usr/bin/env bash
# DPoP-bound against unbound (bearer) traffic on one release `sessiond serve` (a fresh SQLite
# file, rate limits off, SESSIOND_DPOP_PROOF_MAX_AGE=10m so proofs signed before the run stay
# fresh through it), under `wrk -t2 -c32`:
#
#   refresh        POST /v1/sessions/refresh, each refresh token spent once (wrk/refresh.lua)
#   dpop-refresh   the same for sessions bound to a P-256 key each, with a proof per request
#                  (wrk/dpop.lua MODE=refresh)
#   current        GET /v1/sessions/current with one bearer access token
#   dpop-current   the same with one bound access token as `Authorization: DPoP` and a fresh
#                  proof (with ath) per request (wrk/dpop.lua MODE=current)
#
# Proofs are signed by wrk/mint_dpop.py before each run (a separate set for the warm-up), so
# the client's signing never competes with the server for the cores; each proof is sent once
# (the server refuses replays). For each case it prints req/s, p50/p99 and the server's CPU per
# request (user + system time over the measured run, from /proc/PID/stat). Every answer must be
# 200: the run fails otherwise.
#
#   bench/dpop.sh
#   CASES="current dpop-current" DURATION=5s bench/dpop.sh
#
# Settings (environment): CASES (default "refresh dpop-refresh current dpop-current"), DURATION
# (10s), WARMUP (2s), THREADS (2), CONNS (32), SESSIONS (refresh tokens per refresh run, 400000),
# PROOFS (proofs per dpop-current run, 400000), WARM_SESSIONS and WARM_PROOFS (the same for the
# warm-up, whose answers are not checked: 40000 and 60000).
#
# Needs `cargo build --release -p sessiond-server`, wrk, curl, jq and python3 with the
# `cryptography` package. Everything listens on 127.0.0.1 and stops when the script ends.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
bench_log_env

CASES=${CASES:-refresh dpop-refresh current dpop-current}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
THREADS=${THREADS:-2}
CONNS=${CONNS:-32}
SESSIONS=${SESSIONS:-400000}
PROOFS=${PROOFS:-400000}
WARM_SESSIONS=${WARM_SESSIONS:-40000}
WARM_PROOFS=${WARM_PROOFS:-60000}
[[ -x target/release/sessiond ]] || { echo "target/release/sessiond missing: cargo build --release -p sessiond-server" >&2; exit 2; }
command -v wrk >/dev/null || { echo "wrk missing (apt-get install -y wrk)" >&2; exit 2; }
python3 -c 'import cryptography' 2>/dev/null || { echo "python3 cryptography missing (pip install cryptography)" >&2; exit 2; }

bench_workdir

hz=$(getconf CLK_TCK)
key="dpop-bench-admin-key-0123456789-abcdefghijklmnopq"
issuer=http://bench

start_server() {
  port=$(free_port)
  mkdir -p "$work/$1"
  SESSIOND_DATABASE_URL="sqlite://$work/$1/sessiond.db" SESSIOND_ADMIN_KEYS=$key \
    SESSIOND_ISSUER=$issuer SESSIOND_RATE_LIMITS=off SESSIOND_DPOP_PROOF_MAX_AGE=10m \
    SESSIOND_MAX_SESSIONS_PER_USER=1000 SESSIOND_LISTEN=127.0.0.1:$port \
    target/release/sessiond serve >"$work/$1/server.log" 2>&1 &
  server=$!
  wait_ready "$port" "$work/$1/server.log"
  base="http://127.0.0.1:$port"
}

# wrk for $3 with the case's arguments and $1 (variable assignments, e.g. LINES_FILE=...); the
# output goes to $2.
run_wrk() {
  local assignments=$1 out=$2 duration=$3; shift 3
  # shellcheck disable=SC2086 # the assignments are words on purpose
  env WRK_THREADS="$THREADS" $assignments \
    wrk -t"$THREADS" -c"$CONNS" -d"$duration" --latency "$@" >"$out"
}

for case in $CASES; do
  start_server "$case"
  dir="$work/$case"
  case $case in
    refresh)
      python3 bench/wrk/mint_sessions.py "$base" "$key" "$WARM_SESSIONS" "$dir/warm.txt" >/dev/null
      python3 bench/wrk/mint_sessions.py "$base" "$key" "$SESSIONS" "$dir/run.txt" >/dev/null
      warm=(-s bench/wrk/refresh.lua); warm_env="TOKENS_FILE=$dir/warm.txt"
      run=(-s bench/wrk/refresh.lua); run_env="TOKENS_FILE=$dir/run.txt"
      ;;
    dpop-refresh)
      python3 bench/wrk/mint_dpop.py "$base" "$key" "$issuer" refresh "$WARM_SESSIONS" "$dir/warm.txt" >/dev/null
      python3 bench/wrk/mint_dpop.py "$base" "$key" "$issuer" refresh "$SESSIONS" "$dir/run.txt" >/dev/null
      warm=(-s bench/wrk/dpop.lua); warm_env="MODE=refresh LINES_FILE=$dir/warm.txt"
      run=(-s bench/wrk/dpop.lua); run_env="MODE=refresh LINES_FILE=$dir/run.txt"
      ;;
    current)
      token=$(curl -sf -X POST "$base/v1/sessions" -H "Authorization: Bearer $key" \
        -H 'Content-Type: application/json' -d '{"user_id": "bench-user"}' | jq -r .access_token)
      warm=(-H "Authorization: Bearer $token"); warm_env=""
      run=("${warm[@]}"); run_env=""
      ;;
    dpop-current)
      python3 bench/wrk/mint_dpop.py "$base" "$key" "$issuer" current "$WARM_PROOFS" "$dir/warm.txt" >/dev/null
      python3 bench/wrk/mint_dpop.py "$base" "$key" "$issuer" current "$PROOFS" "$dir/run.txt" >/dev/null
      warm=(-s bench/wrk/dpop.lua); warm_env="MODE=current LINES_FILE=$dir/warm.txt"
      run=(-s bench/wrk/dpop.lua); run_env="MODE=current LINES_FILE=$dir/run.txt"
      ;;
    *) echo "unknown case $case" >&2; exit 2 ;;
  esac
  path=/v1/sessions/refresh
  [[ $case == *current ]] && path=/v1/sessions/current
  run_wrk "$warm_env" "$dir/warm-wrk.txt" "$WARMUP" "${warm[@]}" "$base$path"
  ticks_before=$(cpu_ticks "$server")
  run_wrk "$run_env" "$dir/wrk.txt" "$DURATION" "${run[@]}" "$base$path"
  ticks_after=$(cpu_ticks "$server")
  kill "$server"; wait "$server" 2>/dev/null || true; server=

  if grep -q "Non-2xx" "$dir/wrk.txt" || grep -Eq "failed=[1-9]|exhausted=[1-9]" "$dir/wrk.txt"; then
    cat "$dir/wrk.txt" >&2
    echo "$case: failed requests, or too few tokens or proofs minted (raise SESSIONS or PROOFS)" >&2
    exit 1
  fi
  requests=$(awk '/requests in/ {print $1}' "$dir/wrk.txt")
  rps=$(awk '/^Requests\/sec:/ {printf "%.0f", $2}' "$dir/wrk.txt")
  p50=$(awk '$1 == "50%" {print $2}' "$dir/wrk.txt")
  p99=$(awk '$1 == "99%" {print $2}' "$dir/wrk.txt")
  cpu_us=$(awk -v t=$((ticks_after - ticks_before)) -v hz="$hz" -v n="$requests" \
    'BEGIN {printf "%.1f", (n > 0 ? t / hz * 1e6 / n : 0)}')
  echo "$case $path (-t$THREADS -c$CONNS -d$DURATION): $rps req/s p50 $p50 p99 $p99 | server cpu/request $cpu_us us"
done
