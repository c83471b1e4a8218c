#!/usr/bin/env bash
# usage: bench/pg-instances.sh INSTANCES refresh|validate
# A fresh schema, INSTANCES release servers on it, one sessiond-load per server (32 connections
# split between them); prints each load JSON line and each server's CPU time.
# Run from the repository root after `cargo build --release -p sessiond-server -p sessiond-load`;
# needs PostgreSQL on 127.0.0.1:5432 (trust auth, database test). The servers listen on free
# ports picked at random; the script stops if one of them does not start, and stops its servers
# and drops its schema however it ends.
# Rate limits are off (a benchmark's few sessions would otherwise hit the per-session refresh
# limit); refreshes are audited as by default unless SESSIOND_AUDIT_REFRESHES says otherwise.
# DATABASE_URL overrides the database (for example to go through a proxy that counts round trips).
set -eu
. "$(dirname "$0")/lib.sh"
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
  SESSIOND_ISSUER=http://bench RUST_LOG=warn \
    target/release/sessiond serve >"$out/pg$i.log" 2>&1 &
  server=$!
  pids+=("$server"); ports+=("$port")
  wait_ready "$port" "$out/pg$i.log"
done
conns=$((32 / n))
loads=()
for i in $(seq 1 "$n"); do
  target/release/sessiond-load --url "http://127.0.0.1:${ports[i-1]}" --admin-key $KEY --mode "$mode" \
    --connections $conns --duration 10s 2>/dev/null >"$out/pgload$i.json" &
  loads+=($!)
done
for l in "${loads[@]}"; do wait "$l"; done
for i in $(seq 1 "$n"); do cat "$out/pgload$i.json"; done
for p in "${pids[@]}"; do echo "server cpu: $(ps -o cputime= -p "$p")"; done
