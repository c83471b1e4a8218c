#!/usr/bin/env bash
# Concurrent `GET /v1/stats` on a SQLite file of many sessions, and what they cost a listing
# sent meanwhile.
#
# A release `sessiond serve` on a file seeded by sessiond-seed with SESSIONS sessions (one user
# each), user defaults except SESSIOND_RATE_LIMITS=off. Once the gauge task's first count is
# over (SETTLE seconds after the server answers), REQUESTS `GET /v1/stats` are sent at once
# and, 0.3 s later, one `GET /v1/users/seed-user-7/sessions`, which needs a read connection.
# Prints the server's CPU time over the whole burst (from /proc/PID/stat), the wall time until
# every stats answer is in, each stats answer's time (sorted), the listing's time, and the
# active sessions counted.
#
#   bench/stats-concurrent.sh
#   SEED_DIR=/var/tmp/sessiond-seeds REQUESTS=16 bench/stats-concurrent.sh
#
# Settings (environment):
#   SESSIONS  sessions seeded (default 250000)
#   REQUESTS  concurrent stats requests (default 8)
#   SETTLE    seconds waited after start for the gauge's first count (default 6)
#   SEED_DIR  keep the seeded file here (sidebyside-EdDSA-SESSIONS/, as bench/sidebyside.sh
#             does) and start each run from a synced copy; by default each run seeds anew
#
# Needs `cargo build --release -p sessiond-server -p sessiond-load` and curl.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

SESSIONS=${SESSIONS:-250000}
REQUESTS=${REQUESTS:-8}
SETTLE=${SETTLE:-6}
SEED_DIR=${SEED_DIR:-}
require_release_build

bench_workdir

key="stats-bench-admin-key-0123456789-abcdefghijklmnop"
export SESSIOND_ADMIN_KEYS=$key SESSIOND_ISSUER=http://bench SESSIOND_SIGNING_ALG=EdDSA \
  RUST_LOG=warn
seeded=${SEED_DIR:-$work}/sidebyside-EdDSA-$SESSIONS
seed_once "$seeded" "$SESSIONS" all.txt
mkdir -p "$work/run"
copy_seeded "$seeded" "$work/run"

serve_sqlite "$work/run"
sleep "$SETTLE"

hz=$(getconf CLK_TCK)
ticks_before=$(cpu_ticks "$server")
started=$(date +%s.%N)
pids=()
for i in $(seq "$REQUESTS"); do
  curl -sf -o "$work/stats-$i.json" -w '%{time_total}\n' -H "authorization: Bearer $key" \
    "http://127.0.0.1:$port/v1/stats" >"$work/time-$i" &
  pids+=($!)
done
sleep 0.3
listing=$(curl -sf -o /dev/null -w '%{time_total}' -H "authorization: Bearer $key" \
  "http://127.0.0.1:$port/v1/users/seed-user-7/sessions")
wait "${pids[@]}"
ended=$(date +%s.%N)
ticks_after=$(cpu_ticks "$server")
active=$(sed -n 's/.*"active_sessions":\([0-9]*\).*/\1/p' "$work/stats-1.json")
echo "stats x$REQUESTS at $SESSIONS sessions: server cpu \
$(awk -v t=$((ticks_after - ticks_before)) -v hz="$hz" 'BEGIN {printf "%.2f", t / hz}') s, \
all answered in $(awk -v a="$started" -v b="$ended" 'BEGIN {printf "%.2f", b - a}') s \
($(cat "$work"/time-* | sort -n | tr '\n' ' ' | sed 's/ $//')), listing ${listing} s, \
active_sessions $active"
