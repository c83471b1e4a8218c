#!/usr/bin/env bash
# What a rotation writes on SQLite, table by table: the pages in the WAL, read back.
#
# Each of ROUNDS rounds starts sessiond on a fresh copy of a seeded file (the layout of
# bench/sidebyside.sh), refreshes under `wrk -c32` (each request spending one token), and
# stops the server with SIGKILL in the middle of the load, so that the WAL holds the frames
# of its current cycle as the storage thread wrote them. bench/wal-frames.py then maps each
# frame's page to its table or index (SQLite's dbstat, on a copy), and counts the commits
# and the rotations of that cycle (from the row ids of the sealed successor pairs written).
# Prints, over all rounds, the frames per rotation and per commit of each table.
#
#   SEED_DIR=/var/tmp/sessiond-seeds bench/wal-frames.sh
#
# Settings (environment): ROUNDS (5), SESSIONS (250000), SEED_DIR (as bench/sidebyside.sh),
# SIGNING_ALG (EdDSA), SYNCHRONOUS (full).
#
# Needs `cargo build --release -p sessiond-server -p sessiond-load`, wrk, and python3 whose
# sqlite3 module has the dbstat table (Debian's does).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

ROUNDS=${ROUNDS:-5}
SIGNING_ALG=${SIGNING_ALG:-EdDSA}
SYNCHRONOUS=${SYNCHRONOUS:-full}
SESSIONS=${SESSIONS:-250000}
SEED_DIR=${SEED_DIR:-}
require_release_build
require_wrk

bench_workdir
bench_server_env walframes
seeded=$(seeded_dir "sidebyside-$SIGNING_ALG-$SESSIONS")
seed_once "$seeded" "$SESSIONS" all.txt

for round in $(seq "$ROUNDS"); do
  run=$work/round-$round
  mkdir -p "$run"
  copy_seeded "$seeded" "$run"
  # Each round spends its own slice of the tokens.
  slice=$((SESSIONS / ROUNDS))
  head -n "$((round * slice))" "$seeded/all.txt" | tail -n "$slice" >"$run/tokens.txt"
  serve_sqlite "$run"
  TOKENS_FILE=$run/tokens.txt WRK_THREADS=2 wrk -t2 -c32 -d4s -s bench/wrk/refresh.lua \
    "http://127.0.0.1:$port" >"$run/wrk.txt" 2>&1 &
  load=$!
  # Somewhere in the middle of the load, so that the cycle in the WAL is under way.
  sleep "2.$((RANDOM % 10))"
  kill -KILL "$server"; wait "$server" 2>/dev/null || true; server=
  wait "$load" || true
done
python3 bench/wal-frames.py "$work"/round-*
