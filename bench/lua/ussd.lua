-- POST /ussd: WRK_TEXT is the customer's input ("" = main menu, "1" = my status, read from Postgres).
local token = os.getenv("WRK_TOKEN") or ""
local input = os.getenv("WRK_TEXT") or ""
local phones = tonumber(os.getenv("WRK_PHONES") or "1000")
local counter = 0

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"

function request()
  counter = counter + 1
  local n = counter % phones
  local body = "sessionId=ATUid_bench_" .. counter .. "&serviceCode=%2A384%2A123%23" ..
    "&phoneNumber=%2B2547" .. string.format("%08d", n) .. "&networkCode=63902&text=" .. input
  return wrk.format(nil, "/ussd?token=" .. token, nil, body)
end
