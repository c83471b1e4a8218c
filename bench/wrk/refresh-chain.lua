-- wrk script: POST /v1/sessions/refresh over a fixed set of sessions, spending each refresh
-- token exactly once by following the rotation: every thread starts from a disjoint slice of
-- TOKENS_FILE (every Nth line) and queues the successor each 200 answer returns, so a run can
-- send more refreshes than the file has lines, over exactly the sessions it names. A request
-- made while a thread's queue is empty is counted (exhausted) and sent with an invalid token.
--   TOKENS_FILE=tokens.txt WRK_THREADS=2 wrk -t2 -c32 -d10s -s refresh-chain.lua http://127.0.0.1:8080

local threads = {}
local thread_count = 0

function setup(thread)
  thread:set("thread_index", thread_count)
  thread_count = thread_count + 1
  table.insert(threads, thread)
end

function init(args)
  queue = {}
  head, tail = 1, 0
  local file = assert(io.open(os.getenv("TOKENS_FILE") or "tokens.txt", "r"))
  local line_number = 0
  local stride = tonumber(os.getenv("WRK_THREADS") or "2")
  for line in file:lines() do
    if line_number % stride == thread_index and #line > 0 then
      tail = tail + 1
      queue[tail] = line
    end
    line_number = line_number + 1
  end
  file:close()
  sent = 0
  exhausted = 0
  failures = 0
end

function request()
  local token
  if head <= tail then
    token = queue[head]
    queue[head] = nil
    head = head + 1
  else
    exhausted = exhausted + 1
    token = "exhausted"
  end
  sent = sent + 1
  return wrk.format("POST", "/v1/sessions/refresh",
    { ["Content-Type"] = "application/json" },
    '{"refresh_token":"' .. token .. '"}')
end

function response(status, headers, body)
  if status ~= 200 then
    failures = failures + 1
    return
  end
  local successor = string.match(body, '"refresh_token"%s*:%s*"([^"]+)"')
  if successor then
    tail = tail + 1
    queue[tail] = successor
  else
    failures = failures + 1
  end
end

function done(summary, latency, requests)
  local sent_total, exhausted_total, failures_total = 0, 0, 0
  for _, thread in ipairs(threads) do
    sent_total = sent_total + thread:get("sent")
    exhausted_total = exhausted_total + thread:get("exhausted")
    failures_total = failures_total + thread:get("failures")
  end
  io.write(string.format(
    "RESULT rps=%.1f p50_ms=%.2f p99_ms=%.2f max_ms=%.2f requests=%d failed=%d exhausted=%d sent=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000, summary.requests,
    failures_total, exhausted_total, sent_total))
end
