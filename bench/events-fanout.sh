#!/usr/bin/env bash
# Event fan-out: one release sessiond on a fresh SQLite file, N admin SSE streams, refreshes at
# a fixed rate as the event source. Prints sessiond-fanout's JSON line plus the server's CPU
# seconds and peak RSS over the run.
#
#   bench/events-fanout.sh STREAMS RATE [SECONDS]
#
# Needs `cargo build --release -p sessiond-server -p sessiond-load` first.
set -euo pipefail
streams=${1:-1000}
rate=${2:-200}
seconds=${3:-10}
cd "$(dirname "$0")/.."
. bench/lib.sh
dir=$(mktemp -d)
# A port nothing listens on, below the range the kernel hands out to outgoing connections: a
# server that cannot bind its port exits.
port=$(free_port)
key="fanout-admin-key-0123456789-abcdefghijklmnop"
SESSIOND_LISTEN=127.0.0.1:$port SESSIOND_DATABASE_URL="sqlite://$dir/sessiond.db" \
  SESSIOND_ADMIN_KEYS=$key SESSIOND_ISSUER=http://bench RUST_LOG=warn \
  SESSIOND_RATE_LIMITS=off target/release/sessiond serve >"$dir/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; rm -rf "$dir"' EXIT
wait_ready "$port" "$dir/server.log"
ulimit -n 65536 2>/dev/null || true
ticks() { awk '{print $14 + $15}' /proc/$server/stat; }
before=$(ticks)
SESSIOND_LOAD_ADMIN_KEY=$key target/release/sessiond-fanout --address 127.0.0.1:$port \
  --streams "$streams" --rate "$rate" --seconds "$seconds" --producers "${PRODUCERS:-32}"
after=$(ticks)
hz=$(getconf CLK_TCK)
echo "server_cpu_s=$(echo "scale=2; ($after - $before) / $hz" | bc) peak_rss_mib=$(awk '/VmHWM/ {print int($2/1024)}' /proc/$server/status)"
