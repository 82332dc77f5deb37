-- wrk script: streaming completions (server-sent events) on keep-alive
-- connections.  wrk counts a response when the chunked body ends, i.e. after
-- "data: [DONE]".  Used by `make load-wrk`:
--   wrk -t2 -c16 -d30s -s tests/load/sse.lua http://127.0.0.1:PORT
wrk.method = "POST"
wrk.path = "/v1/completions"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"prompt": "ROMEO:", "max_tokens": 16, "stream": true, "ignore_eos": true}'

local bad = 0
function response(status, headers, body)
   if status ~= 200 or not string.find(body, "data: %[DONE%]") then
      bad = bad + 1
   end
end

function done(summary, latency, requests)
   io.write(string.format("sse: %d requests, %d errors, p99 %.1f ms\n",
                          summary.requests, summary.errors.status + summary.errors.read,
                          latency:percentile(99) / 1000))
end
