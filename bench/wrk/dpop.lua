-- wrk script: DPoP-bound requests, each line of LINES_FILE (`CREDENTIAL<TAB>PROOF`, made by
-- mint_dpop.py) sent exactly once. MODE=refresh: POST /v1/sessions/refresh with the refresh
-- token and the proof; MODE=current: GET /v1/sessions/current with `Authorization: DPoP` and
-- the proof. Every wrk thread takes a disjoint slice (every Nth line, N = WRK_THREADS); a
-- request after a thread's slice is exhausted is counted and sent without a proof (refused).
-- As refresh.lua, it reads no answer in Lua: a failed request is an answer of status 400 or
-- more, or a socket error, as wrk counts them.
--   LINES_FILE=dpop.txt MODE=refresh WRK_THREADS=2 wrk -t2 -c32 -d10s -s dpop.lua URL

local threads = {}
local thread_count = 0

function setup(thread)
  thread:set("thread_index", thread_count)
  thread_count = thread_count + 1
  table.insert(threads, thread)
end

function init(args)
  lines = {}
  mode = os.getenv("MODE") or "refresh"
  local file = assert(io.open(os.getenv("LINES_FILE") or "dpop.txt", "r"))
  local line_number = 0
  local stride = tonumber(os.getenv("WRK_THREADS") or "2")
  for line in file:lines() do
    if line_number % stride == thread_index then
      table.insert(lines, line)
    end
    line_number = line_number + 1
  end
  file:close()
  next_line = 1
  exhausted = 0
end

function request()
  local line = lines[next_line]
  next_line = next_line + 1
  local credential, proof = "exhausted", nil
  if line == nil then
    exhausted = exhausted + 1
  else
    credential, proof = line:match("^([^\t]+)\t(.+)$")
  end
  if mode == "current" then
    return wrk.format("GET", "/v1/sessions/current",
      { ["Authorization"] = "DPoP " .. credential, ["DPoP"] = proof })
  end
  return wrk.format("POST", "/v1/sessions/refresh",
    { ["Content-Type"] = "application/json", ["DPoP"] = proof },
    '{"refresh_token":"' .. credential .. '"}')
end

function done(summary, latency, requests)
  local used, exhausted_total = 0, 0
  for _, thread in ipairs(threads) do
    used = used + (thread:get("next_line") - 1)
    exhausted_total = exhausted_total + thread:get("exhausted")
  end
  local e = summary.errors
  local failures_total = e.status + e.connect + e.read + e.write + e.timeout
  io.write(string.format(
    "RESULT rps=%.1f p50_ms=%.2f p99_ms=%.2f max_ms=%.2f requests=%d failed=%d exhausted=%d lines_used=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000, summary.requests,
    failures_total, exhausted_total, used))
end
