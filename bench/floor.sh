#!/usr/bin/env bash
# The HTTP floor: what a request costs the server before it does anything, measured as
# `GET /healthz` under the refresh benchmarks' wrk command against a server started as they
# start it (a fresh SQLite file, the defaults except SESSIOND_RATE_LIMITS=off). The loopback
# TCP, hyper, the middleware and the router: every refresh pays them too, so they are the
# part of a refresh's CPU that no storage or signing change can remove.
#
# After a warm-up, prints for each of ROUNDS runs the requests per second and the server's CPU
# per request (user + system time over the run, from /proc/PID/stat, divided by the requests).
#
#   bench/floor.sh
#   ROUNDS=5 DURATION=5s bench/floor.sh
#
# Settings (environment): ROUNDS (3), DURATION (10s), WARMUP (3s), THREADS (2), CONNS (32).
#
# Needs `cargo build --release -p sessiond-server` and wrk. Everything listens on 127.0.0.1 and
# stops when the script ends.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-3s}
THREADS=${THREADS:-2}
CONNS=${CONNS:-32}
require_release_build sessiond
require_wrk

bench_workdir
hz=$(getconf CLK_TCK)
bench_server_env floor
serve_sqlite "$work"

url=http://127.0.0.1:$port/healthz
wrk -t"$THREADS" -c"$CONNS" -d"$WARMUP" "$url" >/dev/null
for round in $(seq "$ROUNDS"); do
  before=$(cpu_ticks "$server")
  out=$(wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" "$url")
  after=$(cpu_ticks "$server")
  requests=$(awk '/requests in/ { print $1 }' <<<"$out")
  rps=$(awk '/Requests\/sec/ { print $2 }' <<<"$out")
  errors=$(awk '/Non-2xx|Socket errors/ { print }' <<<"$out")
  if [[ -n $errors || -z $requests || $requests == 0 ]]; then
    echo "invalid run: $errors" >&2
    exit 1
  fi
  awk -v round="$round" -v rps="$rps" -v ticks=$((after - before)) -v n="$requests" -v hz="$hz" \
    -v args="-t$THREADS -c$CONNS -d$DURATION" 'BEGIN {
      printf "GET /healthz (%s) round %d: %.0f req/s, server cpu/request %.1f us\n",
        args, round, rps, ticks / hz / n * 1e6 }'
done
