#!/usr/bin/env bash
# Access-token validation through HTTP, per signing algorithm: `GET /v1/sessions/current` with
# one valid bearer token, served by a release `sessiond serve` signing with each algorithm in
# turn (a fresh SQLite file each, rate limits off), under `wrk -t2 -c32 -d10s`.
#
# For each algorithm it prints req/s, p50/p99 and the server's CPU per request (user + system
# time over the measured wrk run only, from /proc/PID/stat before and after); then the ratio
# ES256/EdDSA of req/s. Every answer must be 200: the run fails otherwise.
#
#   bench/validation-alg.sh
#   ALGS="EdDSA ES256" DURATION=5s bench/validation-alg.sh
#
# Settings (environment): ALGS (default "EdDSA ES256 RS256 HS256"), DURATION (10s),
# WARMUP (2s), THREADS (2), CONNS (32).
#
# Needs `cargo build --release -p sessiond-server`, wrk and curl. Everything listens on
# 127.0.0.1 and stops when the script ends.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
bench_log_env

ALGS=${ALGS:-EdDSA ES256 RS256 HS256}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
THREADS=${THREADS:-2}
CONNS=${CONNS:-32}
[[ -x target/release/sessiond ]] || { echo "target/release/sessiond missing: cargo build --release -p sessiond-server" >&2; exit 2; }
command -v wrk >/dev/null || { echo "wrk missing (apt-get install -y wrk)" >&2; exit 2; }

bench_workdir

hz=$(getconf CLK_TCK)
key="validation-bench-admin-key-0123456789-abcdefghijklmnop"
declare -A rps_of

for alg in $ALGS; do
  port=$(free_port)
  mkdir -p "$work/$alg"
  SESSIOND_DATABASE_URL="sqlite://$work/$alg/sessiond.db" SESSIOND_ADMIN_KEYS=$key \
    SESSIOND_ISSUER=http://bench SESSIOND_SIGNING_ALG=$alg SESSIOND_RATE_LIMITS=off \
    SESSIOND_LISTEN=127.0.0.1:$port \
    target/release/sessiond serve >"$work/$alg/server.log" 2>&1 &
  server=$!
  wait_ready "$port" "$work/$alg/server.log"
  base="http://127.0.0.1:$port"
  created=$(curl -sf -X POST "$base/v1/sessions" -H "Authorization: Bearer $key" \
    -H 'Content-Type: application/json' \
    -d '{"user_id": "bench-user", "claims": {"roles": ["user"], "permissions": ["notes:read"]}}')
  token=$(jq -r .access_token <<<"$created")
  header=$(cut -d. -f1 <<<"$token" | tr '_-' '/+' | base64 -d 2>/dev/null || true)
  [[ $header == *"\"$alg\""* ]] || { echo "$alg: the token's header is $header" >&2; exit 1; }
  status=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" "$base/v1/sessions/current")
  [[ $status == 200 ]] || { echo "$alg: GET /v1/sessions/current answered $status" >&2; exit 1; }

  run_wrk() {
    wrk -t"$THREADS" -c"$CONNS" -d"$1" --latency -H "Authorization: Bearer $token" \
      "$base/v1/sessions/current"
  }
  run_wrk "$WARMUP" >/dev/null
  ticks_before=$(cpu_ticks "$server")
  run_wrk "$DURATION" >"$work/$alg/wrk.txt"
  ticks_after=$(cpu_ticks "$server")
  kill "$server"; wait "$server" 2>/dev/null || true; server=

  if grep -q "Non-2xx" "$work/$alg/wrk.txt"; then
    cat "$work/$alg/wrk.txt" >&2
    echo "$alg: non-200 answers" >&2
    exit 1
  fi
  requests=$(awk '/requests in/ {print $1}' "$work/$alg/wrk.txt")
  rps=$(awk '/^Requests\/sec:/ {printf "%.0f", $2}' "$work/$alg/wrk.txt")
  p50=$(awk '$1 == "50%" {print $2}' "$work/$alg/wrk.txt")
  p99=$(awk '$1 == "99%" {print $2}' "$work/$alg/wrk.txt")
  cpu_us=$(awk -v t=$((ticks_after - ticks_before)) -v hz="$hz" -v n="$requests" \
    'BEGIN {printf "%.1f", (n > 0 ? t / hz * 1e6 / n : 0)}')
  rps_of[$alg]=$rps
  echo "$alg GET /v1/sessions/current (-t$THREADS -c$CONNS -d$DURATION): $rps req/s \
p50 $p50 p99 $p99 | server cpu/request $cpu_us us"
done

if [[ -n ${rps_of[ES256]:-} && -n ${rps_of[EdDSA]:-} ]]; then
  awk -v a="${rps_of[ES256]}" -v b="${rps_of[EdDSA]}" \
    'BEGIN {printf "ratio ES256/EdDSA req/s: %.2fx\n", (b > 0 ? a / b : 0)}'
fi
