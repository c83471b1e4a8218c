#!/usr/bin/env bash
# usage: bench/pg-instances.sh INSTANCES refresh|validate
# A fresh schema, INSTANCES release servers on it, one sessiond-load per server (32 connections
# split between them); prints each load JSON line, then the CPU per request over the loads'
# measured window (from the moment every load has begun measuring to the moment the first has
# ended, as their `window starts` and `window ends` lines on stderr tell) of each server and,
# when PostgreSQL runs on this machine, of its processes (every `postgres` process of the
# machine, read at the window's two ends, and the processes the postmaster reaped meanwhile: run
# nothing else on that PostgreSQL meanwhile). The sessions' creation and the warm-up are outside
# the window. While the loads run the script starts no process but `sleep`, so that measuring
# takes next to nothing from the two cores (polling every process's CPU every 0.05 s, as it
# once did, took about a sixth of them).
# Run from the repository root after `cargo build --release -p sessiond-server -p sessiond-load`;
# needs PostgreSQL on 127.0.0.1:5432 (trust auth, database test). The servers listen on free
# ports picked at random; the script stops if one of them does not start, and stops its servers
# and drops its schema however it ends.
# Rate limits are off (a benchmark's few sessions would otherwise hit the per-session refresh
# limit); refreshes are audited as by default unless SESSIOND_AUDIT_REFRESHES says otherwise.
# DATABASE_URL overrides the database (for example to go through a proxy that counts round trips).
# SESSIONS sets the sessions created before the run, split between the loads (sessiond-load's
# default: 4 per connection). Each session is refreshed over and over through its instance; with
# enough of them (say 50000 for one instance) no refresh finds its token among the 32,768
# successors an instance remembers, as in a deployment whose clients refresh minutes apart.
set -eu
. "$(dirname "$0")/lib.sh"
bench_log_env
n=$1; mode=$2
KEY=bench-admin-key-0123456789-abcdefghijklmnop
admin=postgres://postgres@127.0.0.1:5432/test
schema=bench_$(date +%s%N)
base=${DATABASE_URL:-$admin}
out=${OUT:-/tmp}
require_release_build sessiond sessiond-load
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  psql -q "$admin" -c "DROP SCHEMA IF EXISTS $schema CASCADE" 2>/dev/null || true
}
trap cleanup EXIT
psql -q "$admin" -c "CREATE SCHEMA $schema"
case $base in *\?*) sep='&' ;; *) sep='?' ;; esac
url="$base${sep}options=-c%20search_path%3D$schema"
ports=()
for i in $(seq 1 "$n"); do
  # A port nothing listens on: a server that cannot bind exits, and the load would then
  # measure whatever holds the port.
  port=$(free_port)
  SESSIOND_RATE_LIMITS=off SESSIOND_AUDIT_REFRESHES=${SESSIOND_AUDIT_REFRESHES:-all} \
  SESSIOND_ADMIN_KEYS=$KEY SESSIOND_LISTEN=127.0.0.1:$port SESSIOND_DATABASE_URL="$url" \
  SESSIOND_ISSUER=http://bench \
    target/release/sessiond serve >"$out/pg$i.log" 2>&1 &
  server=$!
  pids+=("$server"); ports+=("$port")
  wait_ready "$port" "$out/pg$i.log"
done
# postgres_ticks FILE: one awk reading every process's /proc/PID/stat: a "pid ticks" line per
# local postgres process (its user + system time), and a "reaped-PID ticks" line with the time of
# the children the postmaster (the postgres process whose parent is not one) has reaped, all
# appended to FILE.
postgres_ticks() {
  awk '$2 == "(postgres)" { pid[$1] = $1; ticks[$1] = $14 + $15; parent[$1] = $4; reaped[$1] = $16 + $17 }
    END { for (p in pid) { print p, ticks[p]; if (!(parent[p] in pid)) print "reaped-" p, reaped[p] } }' \
    /proc/[0-9]*/stat 2>/dev/null >>"$1" || true
}
conns=$((32 / n))
loads=()
for i in $(seq 1 "$n"); do
  target/release/sessiond-load --url "http://127.0.0.1:${ports[i-1]}" --admin-key $KEY --mode "$mode" \
    --connections $conns --duration 10s ${SESSIONS:+--sessions $((SESSIONS / n))} \
    2>"$out/pgload$i.err" >"$out/pgload$i.json" &
  loads+=($!)
done
# marked WHAT: how many loads have written their line "window WHAT" (bash alone: no process).
marked() {
  local file line count=0
  for file in "${errs[@]}"; do
    [[ -f $file ]] || continue
    while IFS= read -r line; do
      if [[ $line == "  window $1" ]]; then count=$((count + 1)); break; fi
    done <"$file"
  done
  echo "$count"
}
errs=()
for i in $(seq 1 "$n"); do errs+=("$out/pgload$i.err"); done
running() {
  local l
  for l in "${loads[@]}"; do kill -0 "$l" 2>/dev/null && return 0; done
  return 1
}
while running && (($(marked starts) < n)); do sleep 0.05; done
server_before=()
for p in "${pids[@]}"; do server_before+=("$(cpu_ticks "$p")"); done
samples=$out/pg-postgres-ticks
: >"$samples"
postgres_ticks "$samples"
echo started >>"$samples"
while running && (($(marked ends) == 0)); do sleep 0.1; done
server_after=()
for p in "${pids[@]}"; do server_after+=("$(cpu_ticks "$p")"); done
postgres_ticks "$samples"
for l in "${loads[@]}"; do wait "$l"; done
requests=0
requests_of=()
for i in $(seq 1 "$n"); do
  cat "$out/pgload$i.json"
  requests_of+=("$(grep -o '"requests":[0-9]*' "$out/pgload$i.json" | cut -d: -f2)")
  requests=$((requests + requests_of[i-1]))
done
hz=$(getconf CLK_TCK)
for i in $(seq 1 "$n"); do
  ticks=$((server_after[i-1] - server_before[i-1]))
  awk -v t="$ticks" -v hz="$hz" -v r="${requests_of[i-1]}" -v i="$i" \
    'BEGIN { printf "server %d cpu: %.2f s, %.0f us per request\n", i, t / hz, t / hz * 1e6 / r }'
done
if [[ -n $(pgrep -x postgres) ]]; then
  # A process seen at the window's start counts from there, one that started later (a new
  # connection, an autovacuum worker) from zero, and one that ended meanwhile through the
  # postmaster's reaped time, whole: its time before the window counts too (none of the
  # loads' connections ends within it).
  awk -v hz="$hz" -v r="$requests" '
    $1 == "started" { started = 1; next }
    !($1 in first) { first[$1] = started ? 0 : $2 }
    { last[$1] = $2 }
    END { for (pid in last) t += last[pid] - first[pid]
          printf "postgres cpu: %.2f s, %.0f us per request (%d requests in all)\n", t / hz, t / hz * 1e6 / r, r }' "$samples"
else
  echo "postgres cpu: not on this machine"
fi
