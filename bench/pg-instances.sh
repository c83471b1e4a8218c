#!/usr/bin/env bash
# usage: bench/pg-instances.sh INSTANCES refresh|validate
# A fresh schema, INSTANCES release servers on it, one sessiond-load per server (32 connections
# split between them); prints each load JSON line and each server's CPU time.
# Run from the repository root after `cargo build --release -p sessiond-server -p sessiond-load`;
# needs PostgreSQL on 127.0.0.1:5432 (trust auth, database test). Ports 19191.. are used.
# Rate limits are off (a benchmark's few sessions would otherwise hit the per-session refresh
# limit); refreshes are audited as by default unless SESSIOND_AUDIT_REFRESHES says otherwise.
# DATABASE_URL overrides the database (for example to go through a proxy that counts round trips).
set -eu
n=$1; mode=$2
KEY=bench-admin-key-0123456789-abcdefghijklmnop
schema=bench_$(date +%s%N)
base=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
psql -q "postgres://postgres@127.0.0.1:5432/test" -c "CREATE SCHEMA $schema"
case $base in *\?*) sep='&' ;; *) sep='?' ;; esac
url="$base${sep}options=-c%20search_path%3D$schema"
pids=()
for i in $(seq 1 $n); do
  SESSIOND_RATE_LIMITS=off SESSIOND_AUDIT_REFRESHES=${SESSIOND_AUDIT_REFRESHES:-all} \
  SESSIOND_ADMIN_KEYS=$KEY SESSIOND_LISTEN=127.0.0.1:1919$i SESSIOND_DATABASE_URL="$url" SESSIOND_ISSUER=http://bench RUST_LOG=warn \
    target/release/sessiond serve > ${OUT:-/tmp}/pg$i.log 2>&1 &
  pids+=($!); sleep 1.5
done
conns=$((32 / n))
for i in $(seq 1 $n); do
  target/release/sessiond-load --url http://127.0.0.1:1919$i --admin-key $KEY --mode $mode --connections $conns --duration 10s 2>/dev/null > ${OUT:-/tmp}/pgload$i.json &
done
wait %$((n+1)) 2>/dev/null; sleep 14
for i in $(seq 1 $n); do cat ${OUT:-/tmp}/pgload$i.json; done
for p in "${pids[@]}"; do echo "server cpu: $(ps -o cputime= -p $p)"; kill $p; done
sleep 1; psql -q "postgres://postgres@127.0.0.1:5432/test" -c "DROP SCHEMA $schema CASCADE"
