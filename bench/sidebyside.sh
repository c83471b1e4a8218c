#!/usr/bin/env bash
# Refresh side by side with the node oidc-provider peer, with the same wrk command.
#
# 1. The peer: ../shared/peers/oidc-provider/bench.sh, run from a writable copy of its folder
#    (it writes node_modules/, its token files and results/ next to itself, and shared/ is
#    read-only), which also prints its own one-line summary.
# 2. sessiond: a release `sessiond serve` on a fresh SQLite file seeded by sessiond-seed with
#    SESSIONS sessions (one user each), with the defaults a user gets (every refresh audited,
#    SESSIOND_SQLITE_SYNCHRONOUS=full, EdDSA, development master key next to the file, the
#    default log level with its access-log line per request, written to a file) except
#    SESSIOND_RATE_LIMITS=off; then `wrk -t2 -c32` for WARMUP on warm-up tokens and for
#    DURATION on the others, with bench/wrk/refresh.lua, which spends each refresh token once.
#
# For each side it prints refresh/s, p50, p99, non-2xx, the server's CPU per refresh (user +
# system time over the measured wrk run only, from /proc/PID/stat before and after), wrk's own
# CPU seconds, the server's RSS after the run, and at the end the ratios sessiond/peer.
#
#   bench/sidebyside.sh
#   SIGNING_ALG=ES256 SYNCHRONOUS=normal bench/sidebyside.sh
#   SKIP_PEER=1 DURATION=2s bench/sidebyside.sh          # sessiond only (a smoke run)
#   SKIP_PEER=1 ENTRANCE=cookie bench/sidebyside.sh       # a browser's refresh by cookie
#   SEED_DIR=/var/tmp/sessiond-seeds bench/sidebyside.sh  # seed once, reuse after
#
# Settings (environment):
#   SIGNING_ALG  EdDSA (default), ES256 or RS256: sessiond's SESSIOND_SIGNING_ALG
#   PEER_ALG     the peer's SIGN_ALG: SIGNING_ALG when it is RS256 or ES256, else RS256 (the
#                peer's default, as in its published results)
#   SYNCHRONOUS  full (default) or normal: sessiond's SESSIOND_SQLITE_SYNCHRONOUS
#   SESSIONS     sessions seeded (default 500000). Each request spends one token, so the run
#                needs rate × (WARMUP + DURATION) tokens: 500,000 covers 38,000/s. The run
#                fails if refresh.lua reports exhausted tokens or a failed request.
#   WARM_TOKENS  of those, the tokens set aside for the warm-up (default 100000: 33,000/s
#                for 3 s; a warm-up that runs out says so, and its last requests are refused)
#   ORDER        created (default): the tokens are spent in the order their sessions were
#                created, as when sessions that began together come back together (their
#                access tokens expire together); shuffled: in a random order (a fixed one, the
#                same every run), so that each refresh reads and writes pages at random
#   DURATION (10s), WARMUP (3s), THREADS (2), CONNS (32): the wrk run, as the peer's
#   ENTRANCE     json (default): the token in a JSON body; cookie: in the refresh cookie with
#                the CSRF header, as a browser sends it, the server in cookie mode
#                (SESSIOND_COOKIE_MODE=on; its answer sets the next cookie and leaves the
#                token out of the body)
#   SKIP_PEER=1  run sessiond only
#   SERVER_LOG   a RUST_LOG filter for sessiond instead of its default (warn: no access log)
#   SEED_DIR     keep the seeded file (sidebyside-ALG-SESSIONS/) here and start later runs from
#                a copy of it, synced before the server starts; by default each run seeds into
#                a temporary directory. The copy's rows are the seeded ones: no run spends the
#                pristine file's tokens.
#
# Needs `cargo build --release -p sessiond-server -p sessiond-load`, wrk, and for the peer node
# and npm. Everything listens on 127.0.0.1 and stops when the script ends.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
repo=$(pwd)

SIGNING_ALG=${SIGNING_ALG:-EdDSA}
SYNCHRONOUS=${SYNCHRONOUS:-full}
SESSIONS=${SESSIONS:-500000}
WARM_TOKENS=${WARM_TOKENS:-100000}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-3s}
THREADS=${THREADS:-2}
CONNS=${CONNS:-32}
SKIP_PEER=${SKIP_PEER:-0}
SEED_DIR=${SEED_DIR:-}
ORDER=${ORDER:-created}
case $SIGNING_ALG in
  RS256 | ES256) PEER_ALG=${PEER_ALG:-$SIGNING_ALG} ;;
  *) PEER_ALG=${PEER_ALG:-RS256} ;;
esac
if [[ $ORDER != created && $ORDER != shuffled ]]; then
  echo "ORDER must be created or shuffled, not $ORDER" >&2
  exit 2
fi
bench_entrance
if ((WARM_TOKENS >= SESSIONS)); then
  echo "WARM_TOKENS ($WARM_TOKENS) must be below SESSIONS ($SESSIONS)" >&2
  exit 2
fi
require_release_build
require_wrk

bench_workdir

hz=$(getconf CLK_TCK)
rss_mib() { awk '/VmRSS/{printf "%.1f", $2 / 1024}' "/proc/$1/status"; }

# --- the peer -------------------------------------------------------------------------------
peer_line=
if [[ $SKIP_PEER != 1 ]]; then
  peer_src=$repo/../shared/peers/oidc-provider
  [[ -x $peer_src/bench.sh ]] || { echo "no peer benchmark at $peer_src" >&2; exit 2; }
  # The peer writes next to itself; shared/ may be read-only, so it runs from a copy.
  cp -r "$peer_src" "$work/peer"
  chmod -R u+w "$work/peer"
  echo "peer: oidc-provider ($PEER_ALG) from a copy of $peer_src" >&2
  (cd "$work/peer" && SIGN_ALG=$PEER_ALG THREADS=$THREADS CONNS=$CONNS DURATION=$DURATION \
    WARMUP=$WARMUP ./bench.sh) >&2
  peer_result=$(cat "$work"/peer/results/*/refresh.result)
  peer_requests=$(field "$peer_result" requests)
  peer_cpu_us=$(awk -v s="$(field "$peer_result" node_cpu_s)" -v n="$peer_requests" \
    'BEGIN {printf "%.0f", (n > 0 ? s * 1e6 / n : 0)}')
  peer_rss=$(field "$peer_result" rss)
  peer_line="oidc-provider refresh ($PEER_ALG, in memory, -t$THREADS -c$CONNS -d$DURATION): \
$(field "$peer_result" rps) req/s p50 $(field "$peer_result" p50_ms) ms \
p99 $(field "$peer_result" p99_ms) ms non2xx $(field "$peer_result" non2xx) \
exhausted $(field "$peer_result" exhausted_reqs) | server cpu/refresh ${peer_cpu_us} us \
wrk cpu $(field "$peer_result" wrk_cpu_s) s | rss ${peer_rss} MiB"
fi

# --- sessiond -------------------------------------------------------------------------------
bench_server_env sidebyside
seeded=$(seeded_dir "sidebyside-$SIGNING_ALG-$SESSIONS")
seed_once "$seeded" "$SESSIONS" all.txt
echo "seed: $(cat "$seeded/seed.json")" >&2
if [[ $seeded != "$work/seeded" ]]; then
  copy_seeded "$seeded" "$work"
else
  mv "$seeded"/sessiond.db* "$work/"
fi
head -n "$WARM_TOKENS" "$seeded/all.txt" >"$work/warm.txt"
tail -n +"$((WARM_TOKENS + 1))" "$seeded/all.txt" >"$work/tokens.txt"
if [[ $ORDER == shuffled ]]; then
  for list in warm tokens; do
    shuf --random-source=<(yes sessiond) "$work/$list.txt" >"$work/$list.shuffled"
    mv "$work/$list.shuffled" "$work/$list.txt"
  done
fi

serve_sqlite "$work"

run_wrk() { # tokens-file duration -> wrk output
  TOKENS_FILE=$1 WRK_THREADS=$THREADS wrk -t"$THREADS" -c"$CONNS" -d"$2" --latency \
    -s bench/wrk/refresh.lua "http://127.0.0.1:$port"
}
warm=$(run_wrk "$work/warm.txt" "$WARMUP" | grep ^RESULT)
echo "warm-up: $warm" >&2
if [[ $(field "$warm" exhausted) != 0 ]]; then
  echo "the warm-up ran out of tokens: raise WARM_TOKENS (now $WARM_TOKENS)" >&2
fi
ticks_before=$(cpu_ticks "$server")
wrk_cpu=$( { TIMEFORMAT='%U %S'; time run_wrk "$work/tokens.txt" "$DURATION" >"$work/wrk.txt" 2>&1; } 2>&1 )
ticks_after=$(cpu_ticks "$server")
result=$(grep ^RESULT "$work/wrk.txt")
rss=$(rss_mib "$server")
requests=$(field "$result" requests)
cpu_us=$(awk -v t=$((ticks_after - ticks_before)) -v hz="$hz" -v n="$requests" \
  'BEGIN {printf "%.0f", (n > 0 ? t / hz * 1e6 / n : 0)}')
wrk_cpu_s=$(awk '{printf "%.2f", $1 + $2}' <<<"$wrk_cpu")
kill "$server"; wait "$server" 2>/dev/null || true; server=

[[ -n $peer_line ]] && echo "$peer_line"
order=
[[ $ORDER == shuffled ]] && order=", shuffled"
[[ $ENTRANCE == cookie ]] && order="$order, by cookie"
echo "sessiond refresh ($SIGNING_ALG, synchronous=$SYNCHRONOUS, $SESSIONS sessions$order, \
-t$THREADS -c$CONNS -d$DURATION): $(field "$result" rps) req/s p50 $(field "$result" p50_ms) ms \
p99 $(field "$result" p99_ms) ms non2xx $(field "$result" failed) \
exhausted $(field "$result" exhausted) | server cpu/refresh ${cpu_us} us wrk cpu ${wrk_cpu_s} s \
| rss ${rss} MiB"
if [[ -n $peer_line ]]; then
  awk -v a="$(field "$result" rps)" -v b="$(field "$peer_result" rps)" \
    -v c="$(field "$result" p99_ms)" -v d="$(field "$peer_result" p99_ms)" \
    -v e="$cpu_us" -v f="$peer_cpu_us" -v g="$rss" -v h="$peer_rss" \
    'function r(x, y) { return y > 0 ? sprintf("%.2fx", x / y) : "n/a" }
     BEGIN { printf "ratio sessiond/peer: refresh/s %s, p99 %s, cpu/refresh %s, rss %s\n",
             r(a, b), r(c, d), r(e, f), r(g, h) }'
fi
if [[ $(field "$result" exhausted) != 0 || $(field "$result" failed) != 0 ]]; then
  echo "invalid run: exhausted tokens or failed requests; seed more (SESSIONS=$((SESSIONS * 2)))" >&2
  exit 1
fi
