#!/usr/bin/env bash
# Instructions per refresh, counted rather than timed: the run of bench/sidebyside.sh against
# sessiond alone, under valgrind's callgrind, which counts the instructions each function
# executes whatever else the machine is doing. For changes smaller than the VMs' noise.
#
# Each of ROUNDS rounds starts the server under callgrind on a fresh copy of a seeded file
# (the layout of bench/sidebyside.sh), warms it, then counts over MEASURE of `wrk -t1 -cCONNS`
# (each request spending one token). Prints, per round, thousands of instructions per
# refresh: in all, then inclusive of Tokio's worker threads (HTTP, middleware and the
# handler), of a refresh's work on them from its credential to its answer (`spend`, the
# function `http::refresh::spend`, or `spend_with_credential` on the cookie route, which calls
# it directly; signing included; the route's handler around it may be inlined), of the
# Ed25519 or RSA signature, of the storage thread (lookups, writes and commits), of its
# rotations alone, and of the checkpointer.
#
#   SEED_DIR=/var/tmp/sessiond-seeds bench/instructions.sh
#
# Callgrind runs every thread on one core and 30–60 times slower, so commits carry fewer
# rotations than at full speed: compare builds with each other at these settings, not with
# the wall-clock figures. The signature's count depends on the instructions valgrind's virtual
# CPU offers AWS-LC (it picks other code paths than on the bare CPU).
#
# Settings (environment): ROUNDS (3), SESSIONS (250000), SEED_DIR (as bench/sidebyside.sh),
# SIGNING_ALG (EdDSA), SYNCHRONOUS (full), WARMUP (10s), MEASURE (20s), BIN (target/release,
# the directory of the server's binary), CONNS (4: wrk's connections; more queue more writes
# behind a running batch, so that a change to batching shows), ENTRANCE (json, or cookie: as
# bench/sidebyside.sh, the server in cookie mode).
#
# Needs `cargo build --release -p sessiond-server -p sessiond-load`, wrk and valgrind.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

ROUNDS=${ROUNDS:-3}
SIGNING_ALG=${SIGNING_ALG:-EdDSA}
SYNCHRONOUS=${SYNCHRONOUS:-full}
SESSIONS=${SESSIONS:-250000}
SEED_DIR=${SEED_DIR:-}
WARMUP=${WARMUP:-10s}
MEASURE=${MEASURE:-20s}
BIN=${BIN:-target/release}
CONNS=${CONNS:-4}
bench_entrance
require_release_build
require_wrk
for tool in valgrind callgrind_control callgrind_annotate; do
  command -v "$tool" >/dev/null || { echo "$tool missing (apt-get install -y valgrind)" >&2; exit 2; }
done

bench_workdir
bench_server_env instructions
# The refresh's work from its credential to its answer (see the header).
spend_symbol='sessiond_server::http::refresh::spend::{{closure}}'
if [[ $ENTRANCE == cookie ]]; then
  spend_symbol='sessiond_server::http::refresh::spend_with_credential::{{closure}}'
fi
seeded=$(seeded_dir "sidebyside-$SIGNING_ALG-$SESSIONS")
seed_once "$seeded" "$SESSIONS" all.txt

# inclusive FILE SYMBOL: the instructions of SYMBOL and everything it called; 0, with a word on
# stderr, when the profile has no such function (a build that inlined it).
inclusive() {
  awk -v symbol="$2" '{ name = $0; sub(/^[ 0-9,]+\([ 0-9.%]+\) +\?\?\?:/, "", name); sub(/ \[.*$/, "", name) }
    name == symbol { gsub(/,/, "", $1); print $1; found = 1; exit }
    END { if (!found) { print 0; print "no " symbol " in the profile: counted as 0 (inlined?)" > "/dev/stderr" } }' "$1"
}

echo "thousand instructions per refresh (SIGNING_ALG=$SIGNING_ALG, $SESSIONS sessions, wrk -t1 -c$CONNS -d$MEASURE under callgrind)"
printf '%-6s %9s %9s %9s %9s %9s %9s %9s %9s\n' round refreshes total tokio spend signing storage rotation checkpt
for round in $(seq "$ROUNDS"); do
  run=$work/round-$round
  mkdir -p "$run"
  copy_seeded "$seeded" "$run"
  # Each round spends its own slice of the tokens.
  sed -n "$((round * 20000 + 1)),$((round * 20000 + 4000))p" "$seeded/all.txt" >"$run/warm.txt"
  sed -n "$((round * 20000 + 4001)),$((round * 20000 + 20000))p" "$seeded/all.txt" >"$run/tokens.txt"
  port=$(free_port)
  SESSIOND_DATABASE_URL="sqlite://$run/sessiond.db" SESSIOND_LISTEN=127.0.0.1:$port \
    SESSIOND_SQLITE_SYNCHRONOUS=$SYNCHRONOUS SESSIOND_RATE_LIMITS=off \
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$run/callgrind.out" \
    "$BIN/sessiond" serve >"$run/server.log" 2>&1 &
  server=$!
  for _ in $(seq 600); do
    curl -sf -o /dev/null "http://127.0.0.1:$port/healthz" && break
    kill -0 "$server" 2>/dev/null || { cat "$run/server.log" >&2; echo "sessiond died" >&2; exit 1; }
    sleep 0.2
  done
  # Under callgrind a request can take seconds once many queue: wrk's default 2 s timeout
  # would count it as failed and invalidate the round.
  run_wrk() {
    TOKENS_FILE=$1 WRK_THREADS=1 wrk -t1 -c"$CONNS" -d"$2" --timeout 60s -s bench/wrk/refresh.lua \
      "http://127.0.0.1:$port"
  }
  run_wrk "$run/warm.txt" "$WARMUP" >/dev/null
  callgrind_control -i on "$server" >/dev/null 2>&1
  run_wrk "$run/tokens.txt" "$MEASURE" >"$run/wrk.txt"
  callgrind_control -i off "$server" >/dev/null 2>&1
  callgrind_control -d "$server" >/dev/null 2>&1
  kill "$server"; wait "$server" 2>/dev/null || true; server=
  result=$(grep ^RESULT "$run/wrk.txt")
  requests=$(field "$result" requests)
  if [[ $(field "$result" exhausted) != 0 || $(field "$result" failed) != 0 ]]; then
    echo "invalid run: exhausted tokens or failed requests" >&2
    exit 1
  fi
  # The dump taken while measuring is the file with part 1.
  callgrind_annotate --inclusive=yes --threshold=100 "$run/callgrind.out.1" >"$run/inclusive.txt"
  total=$(awk '/PROGRAM TOTALS/ { gsub(/,/, "", $1); print $1 }' "$run/inclusive.txt")
  per() { awk -v n="$1" -v r="$requests" 'BEGIN { printf "%9.1f", n / r / 1000 }'; }
  printf '%-6s %9s %s %s %s %s %s %s %s\n' "$round" "$requests" "$(per "$total")" \
    "$(per "$(inclusive "$run/inclusive.txt" 'tokio::runtime::scheduler::multi_thread::worker::run')")" \
    "$(per "$(inclusive "$run/inclusive.txt" "$spend_symbol")")" \
    "$(per "$(inclusive "$run/inclusive.txt" 'sessiond_core::token::keys::Keyring::sign')")" \
    "$(per "$(inclusive "$run/inclusive.txt" 'sessiond_store_sqlite::engine::serve')")" \
    "$(per "$(inclusive "$run/inclusive.txt" 'sessiond_store_sqlite::store::rotate')")" \
    "$(per "$(inclusive "$run/inclusive.txt" 'sessiond_store_sqlite::engine::checkpoint')")"
done
