-- POST /voice with isActive=1 for one of WRK_SESSIONS sessions seeded with a script in Redis.
local token = os.getenv("WRK_TOKEN") or ""
local sessions = tonumber(os.getenv("WRK_SESSIONS") or "1000")
local counter = 0

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"

function request()
  counter = counter + 1
  local n = counter % sessions
  local body = "isActive=1&sessionId=ATVId_bench_" .. n .. "&direction=Outbound" ..
    "&callerNumber=%2B2547" .. string.format("%08d", n) .. "&destinationNumber=%2B254711082000" ..
    "&callSessionState=Answered"
  return wrk.format(nil, "/voice?token=" .. token, nil, body)
end
