-- wrk script: POST /v1/sessions/refresh, spending each refresh token of TOKENS_FILE exactly
-- once. Every wrk thread takes a disjoint slice (every Nth line), so no token is sent twice;
-- a request after a thread's slice is exhausted is counted and sent with an invalid token.
--
-- The script has no `response` function, as the peer's (shared/peers/oidc-provider/common.lua)
-- has none: with one, wrk copies every answer's headers and body into Lua, which cost it about
-- 30 % more CPU per request on the two cores the server shares. A failed request is one wrk
-- counts itself: an answer of status 400 or more (a refresh answers 200 or an error), or a
-- socket error.
--
-- With ENTRANCE=cookie each token goes in the refresh cookie with the CSRF header and no body,
-- as a browser refreshes against a server with SESSIOND_COOKIE_MODE=on.
--   TOKENS_FILE=tokens.txt wrk -t2 -c32 -d10s -s refresh.lua http://127.0.0.1:8080

local threads = {}
local thread_count = 0

function setup(thread)
  thread:set("thread_index", thread_count)
  thread_count = thread_count + 1
  table.insert(threads, thread)
end

function init(args)
  tokens = {}
  local file = assert(io.open(os.getenv("TOKENS_FILE") or "tokens.txt", "r"))
  local line_number = 0
  local stride = tonumber(os.getenv("WRK_THREADS") or "2")
  for line in file:lines() do
    if line_number % stride == thread_index then
      table.insert(tokens, line)
    end
    line_number = line_number + 1
  end
  file:close()
  next_token = 1
  exhausted = 0
  by_cookie = os.getenv("ENTRANCE") == "cookie"
end

function request()
  local token = tokens[next_token]
  next_token = next_token + 1
  if token == nil then
    exhausted = exhausted + 1
    token = "exhausted"
  end
  if by_cookie then
    -- A browser's refresh in cookie mode: the token in its cookie, the CSRF header, no body.
    return wrk.format("POST", "/v1/sessions/refresh",
      { ["Cookie"] = "__Secure-sessiond-refresh=" .. token, ["X-Sessiond-CSRF"] = "1" })
  end
  return wrk.format("POST", "/v1/sessions/refresh",
    { ["Content-Type"] = "application/json" },
    '{"refresh_token":"' .. token .. '"}')
end

function done(summary, latency, requests)
  local used, exhausted_total = 0, 0
  for _, thread in ipairs(threads) do
    used = used + (thread:get("next_token") - 1)
    exhausted_total = exhausted_total + thread:get("exhausted")
  end
  local e = summary.errors
  local failures_total = e.status + e.connect + e.read + e.write + e.timeout
  io.write(string.format(
    "RESULT rps=%.1f p50_ms=%.2f p99_ms=%.2f max_ms=%.2f requests=%d failed=%d exhausted=%d tokens_used=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000, summary.requests,
    failures_total, exhausted_total, used))
end
