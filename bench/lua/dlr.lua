-- POST /dlr as AT does: form-encoded, a unique message id per request.
-- WRK_TOKEN: the webhook token; WRK_DELAY_MS: pause before each request (a rate cap per connection).
local token = os.getenv("WRK_TOKEN") or ""
local delay_ms = tonumber(os.getenv("WRK_DELAY_MS") or "0")
local counter = 0
local thread_tag = tostring(math.random(100000000, 999999999))
local statuses = {"Success", "Success", "Success", "Failed", "Sent"}

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"

function request()
  counter = counter + 1
  local status = statuses[(counter % #statuses) + 1]
  local reason = status == "Failed" and "DeliveryFailure" or ""
  local body = "id=ATXid_" .. thread_tag .. "_" .. counter .. "&status=" .. status ..
    "&phoneNumber=%2B2547" .. string.format("%08d", counter % 100000000) ..
    "&networkCode=63902&failureReason=" .. reason .. "&retryCount=0"
  return wrk.format(nil, "/dlr?token=" .. token, nil, body)
end

function delay()
  return delay_ms
end
