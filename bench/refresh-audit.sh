#!/usr/bin/env bash
# Refresh throughput with refreshes audited (SESSIOND_AUDIT_REFRESHES=all, the default) and
# not (off): a fresh release sessiond on a new SQLite file per run, rate limits off, then
# sessiond-load --mode refresh with 32 connections for 10 s after a 2 s warm-up. Prints one
# line per run: the setting and sessiond-load's JSON.
#
#   bench/refresh-audit.sh [RUNS]
#
# Needs `cargo build --release -p sessiond-server -p sessiond-load` first.
set -euo pipefail
runs=${1:-2}
cd "$(dirname "$0")/.."
key="refresh-audit-admin-key-0123456789-abcdefghij"
for run in $(seq "$runs"); do
  for setting in all off; do
    dir=$(mktemp -d)
    port=$((20000 + RANDOM % 20000))
    SESSIOND_LISTEN=127.0.0.1:$port SESSIOND_DATABASE_URL="sqlite://$dir/s.db" \
      SESSIOND_ADMIN_KEYS=$key SESSIOND_ISSUER=http://bench SESSIOND_RATE_LIMITS=off \
      SESSIOND_AUDIT_REFRESHES=$setting RUST_LOG=warn \
      target/release/sessiond serve >"$dir/server.log" 2>&1 &
    server=$!
    for _ in $(seq 100); do grep -q listening "$dir/server.log" && break; sleep 0.1; done
    result=$(target/release/sessiond-load --url "http://127.0.0.1:$port" --admin-key "$key" \
      --mode refresh --connections 32 --duration 10s 2>/dev/null)
    echo "run $run audit=$setting $result"
    kill "$server"; wait "$server" 2>/dev/null || true
    rm -rf "$dir"
  done
done
