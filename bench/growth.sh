#!/usr/bin/env bash
# What refreshing adds to a SQLite file, table by table: ACTIVE sessions of a seeded file
# refreshed in a chain (the load of bench/scale.sh) for DURATION, then the server stopped, the
# WAL checkpointed into the file, and each table's and index's size (SQLite's dbstat) compared
# with the copy as seeded. Prints bytes per refresh for each table that grew and in all.
#
#   SEED_DIR=/var/tmp/sessiond-seeds bench/growth.sh
#
# Settings (environment): SESSIONS (10000), ACTIVE (SESSIONS), DURATION (10s), SEED_DIR (as
# bench/scale.sh: sessions-N/), SIGNING_ALG (EdDSA), THREADS (2), CONNS (32).
#
# Needs `cargo build --release -p sessiond-server -p sessiond-load`, wrk, and python3 whose
# sqlite3 module has the dbstat table (Debian's does).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

SESSIONS=${SESSIONS:-10000}
ACTIVE=${ACTIVE:-$SESSIONS}
DURATION=${DURATION:-10s}
SIGNING_ALG=${SIGNING_ALG:-EdDSA}
THREADS=${THREADS:-2}
CONNS=${CONNS:-32}
SEED_DIR=${SEED_DIR:-}
require_release_build
require_wrk

bench_workdir
bench_server_env growth
seeded=$(seeded_dir "sessions-$SESSIONS")
seed_once "$seeded" "$SESSIONS" tokens.txt --tokens "$ACTIVE"
copy_seeded "$seeded" "$work"
head -n "$ACTIVE" "$seeded/tokens.txt" >"$work/tokens.txt"

sizes() { # file -> "name bytes" lines, after a checkpoint that empties the WAL
  python3 - "$1" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
for name, size in db.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name"):
    print(name, size)
PY
}
sizes "$work/sessiond.db" >"$work/before"

serve_sqlite "$work"
result=$(TOKENS_FILE=$work/tokens.txt WRK_THREADS=$THREADS wrk -t"$THREADS" -c"$CONNS" \
  -d"$DURATION" -s bench/wrk/refresh-chain.lua "http://127.0.0.1:$port" | grep ^RESULT)
kill "$server"; wait "$server" 2>/dev/null || true; server=
requests=$(field "$result" requests)
if [[ $(field "$result" failed) != 0 || $requests == 0 ]]; then
  echo "invalid run: $result" >&2
  exit 1
fi
sizes "$work/sessiond.db" >"$work/after"

echo "refreshed $requests times ($SESSIONS sessions, $ACTIVE refreshed, $SIGNING_ALG, -d$DURATION)"
join -a2 -e 0 -o 0,1.2,2.2 <(sort "$work/before") <(sort "$work/after") |
  awk -v n="$requests" '$3 > $2 { grown += $3 - $2; printf "  %-28s %7.0f bytes per refresh\n", $1, ($3 - $2) / n }
    END { printf "  %-28s %7.0f bytes per refresh\n", "all", grown / n }' |
  sort -k2 -n -r
