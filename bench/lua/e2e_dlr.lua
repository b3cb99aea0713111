-- bench.e2e: POST /dlr once for each of WRK_COUNT messages (AT ids WRK_PREFIX<first> .. and phone numbers
-- +2547<8 digits> numbered from WRK_FIRST, default 1; each once, all `Success`). Once every report has its answer it prints "e2e: answered <n> refused <n> extra <n>"
-- and stops its thread; the benchmark then ends wrk (SIGINT) for its report. WRK_TOKEN: the webhook token
-- (?token=, which the seed's app ignores).
--
-- Connections with no report left to post meanwhile ask GET /healthz (the "extra" requests, a few dozen at
-- the end): an idle connection would hold a gunicorn sync worker (no keep-alive: wrk reconnects after each
-- answer) until its timeout, while the last reports wait behind it. Their answers are told apart by the body:
-- both apps answer /healthz with "ok" in it, and no DLR answer has it (Reach's ids are hex).
local token = os.getenv("WRK_TOKEN") or ""
local count = tonumber(os.getenv("WRK_COUNT") or "1000")
local prefix = os.getenv("WRK_PREFIX") or "ATXid_bench_"
local first = tonumber(os.getenv("WRK_FIRST") or "1")
local dlr_path = "/dlr?token=" .. token
local sent, answered, refused, extra = 0, 0, 0, 0
local finished = false
-- wrk calls request() once before connecting, to check the script (script_verify_request): not sent.
local verified = false

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"

function request()
  if not verified then
    verified = true
    return wrk.format("GET", "/healthz")
  end
  if sent >= count then
    return wrk.format("GET", "/healthz")
  end
  local i = first + sent
  sent = sent + 1
  local body = "id=" .. prefix .. i .. "&status=Success&phoneNumber=%2B2547" .. string.format("%08d", i) ..
    "&networkCode=63902&failureReason=&retryCount=0"
  return wrk.format("POST", dlr_path, nil, body)
end

function response(status, headers, body)
  if status == 200 and body and string.find(body, "ok", 1, true) then
    extra = extra + 1
    return
  end
  answered = answered + 1
  if status ~= 200 then
    refused = refused + 1
  end
  if answered == count and not finished then
    finished = true
    io.write(string.format("e2e: answered %d refused %d extra %d\n", answered, refused, extra))
    io.stdout:flush()
    wrk.thread:stop()
  end
end
