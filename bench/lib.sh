# What the benchmark scripts share; sourced by them, from the repository root.
# shellcheck shell=bash

# A temporary directory in $work, removed when the script exits, after the server whose pid is
# in $server (if any) is stopped.
bench_workdir() {
  work=$(mktemp -d)
  server=
  trap bench_cleanup EXIT
}

bench_cleanup() {
  if [[ -n $server ]]; then kill "$server" 2>/dev/null && wait "$server" 2>/dev/null || true; fi
  rm -rf "$work"
}

# require_release_build [BINARY...]: stops the script unless the release binaries it needs
# (by default the server and the seeder) are built.
require_release_build() {
  local binary binaries=("$@")
  ((${#binaries[@]})) || binaries=(sessiond sessiond-seed)
  for binary in "${binaries[@]}"; do
    binary=target/release/$binary
    [[ -x $binary ]] || { echo "$binary missing: cargo build --release -p sessiond-server -p sessiond-load" >&2; exit 2; }
  done
}

# Stops the script unless wrk is installed.
require_wrk() {
  command -v wrk >/dev/null || { echo "wrk missing (apt-get install -y wrk)" >&2; exit 2; }
}

# field LINE KEY: the value of KEY in a line of KEY=VALUE words (a wrk script's RESULT line).
field() { tr ' ' '\n' <<<"$1" | awk -F= -v key="$2" '$1 == key {print $2}'; }

# User + system CPU of process $1, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# bench_log_env: the servers log as a user's does by default (RUST_LOG unset: `info`, an
# access-log line per request), into the run's server log file; SERVER_LOG, when set, is the
# RUST_LOG filter instead (SERVER_LOG=warn leaves the access log out).
bench_log_env() {
  unset RUST_LOG
  if [[ -n ${SERVER_LOG:-} ]]; then export RUST_LOG=$SERVER_LOG; fi
}

# bench_server_env NAME: exports the settings the scripts' servers share: an admin key named
# after NAME, the issuer http://bench, SIGNING_ALG (default EdDSA), the log of bench_log_env.
bench_server_env() {
  export SESSIOND_ADMIN_KEYS=$1-admin-key-0123456789-abcdefghijklmnop \
    SESSIOND_ISSUER=http://bench SESSIOND_SIGNING_ALG=${SIGNING_ALG:-EdDSA}
  bench_log_env
}

# bench_entrance: checks ENTRANCE (json by default, or cookie) and exports it for
# bench/wrk/refresh.lua; with cookie, the servers run in cookie mode (SESSIOND_COOKIE_MODE=on).
bench_entrance() {
  ENTRANCE=${ENTRANCE:-json}
  if [[ $ENTRANCE != json && $ENTRANCE != cookie ]]; then
    echo "ENTRANCE must be json or cookie, not $ENTRANCE" >&2
    exit 2
  fi
  export ENTRANCE
  if [[ $ENTRANCE == cookie ]]; then export SESSIOND_COOKIE_MODE=on; fi
}

# seeded_dir LAYOUT: the directory of a seeded file: SEED_DIR/LAYOUT when SEED_DIR is set (kept
# for later runs), else the run's own $work/seeded.
seeded_dir() {
  if [[ -n ${SEED_DIR:-} ]]; then echo "$SEED_DIR/$1"; else echo "$work/seeded"; fi
}

# seed_once DIR SESSIONS TOKENS_FILE [sessiond-seed options...]: seeds a SQLite file in DIR
# with SESSIONS sessions (one user each), their refresh tokens in DIR/TOKENS_FILE and
# sessiond-seed's summary in DIR/seed.json, unless DIR holds a finished seed already (a
# seed.json). Reads the server's settings (issuer, signing algorithm) from the environment.
seed_once() {
  local dir=$1 sessions=$2 tokens=$3
  shift 3
  [[ -f $dir/seed.json ]] && return 0
  rm -rf "$dir"
  mkdir -p "$dir"
  echo "seeding $sessions sessions into $dir" >&2
  SESSIOND_DATABASE_URL="sqlite://$dir/sessiond.db" target/release/sessiond-seed \
    --sessions "$sessions" --tokens-out "$dir/$tokens" "$@" >"$dir/seed.tmp"
  mv "$dir/seed.tmp" "$dir/seed.json"
}

# copy_seeded DIR DEST: a copy of the seeded file in DIR (with its master key) in DEST. The
# pristine file stays unspent; a run spends the tokens of its copy. The copy is written back
# now, or the kernel writes it back during the measured run and every commit's sync queues
# behind it.
copy_seeded() {
  cp "$1"/sessiond.db* "$2/"
  sync "$2"/sessiond.db*
}

# free_port: a TCP port on 127.0.0.1 that nothing listens on, below Linux's default range of
# ephemeral ports (32768–60999), from which the load generator's own connections take theirs.
free_port() {
  local port
  while :; do
    port=$((20000 + RANDOM % 12000))
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "$port"; return; }
  done
}

# serve_sqlite DIR: starts a release `sessiond serve` on DIR/sessiond.db, listening on a free
# port in $port, its pid in $server and its output in DIR/server.log, with SYNCHRONOUS (default
# full) and rate limits off, and waits until it answers. Its other settings come from the
# environment.
serve_sqlite() {
  port=$(free_port)
  SESSIOND_DATABASE_URL="sqlite://$1/sessiond.db" SESSIOND_LISTEN=127.0.0.1:$port \
    SESSIOND_SQLITE_SYNCHRONOUS=${SYNCHRONOUS:-full} SESSIOND_RATE_LIMITS=off \
    target/release/sessiond serve >"$1/server.log" 2>&1 &
  server=$!
  wait_ready "$port" "$1/server.log"
}

# wait_ready PORT LOG: waits (up to 60 s) until the server in $server answers /healthz on PORT;
# stops the script if it dies first (printing LOG, its output) or never answers.
wait_ready() {
  for _ in $(seq 600); do
    curl -sf -o /dev/null "http://127.0.0.1:$1/healthz" && return 0
    kill -0 "$server" 2>/dev/null || { cat "$2" >&2; echo "sessiond died" >&2; exit 1; }
    sleep 0.1
  done
  echo "sessiond not ready" >&2
  exit 1
}
