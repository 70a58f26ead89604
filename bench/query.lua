-- wrk script for bench/query-load.sh: POST /graphql with an `agendaProgress(id)` query, the id
-- cycling through the seeded agendas (ids file in POP_BENCH_IDS, one per line), the bearer token
-- in POP_BENCH_TOKEN. Prints one machine-readable line at the end: requests/s and latency
-- percentiles in milliseconds.

local query = 'query($id: String!) { agendaProgress(id: $id) { id processingState ' ..
  'processingStateMessage percentComplete operationProgress { operation processingState ' ..
  'percentComplete } } }'

local requests = {}
local next_index = 1

function init(args)
  local token = os.getenv("POP_BENCH_TOKEN")
  local ids_file = os.getenv("POP_BENCH_IDS")
  assert(token and ids_file, "POP_BENCH_TOKEN and POP_BENCH_IDS must be set")
  local headers = {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. token,
  }
  for id in io.lines(ids_file) do
    local body = '{"query":"' .. query .. '","variables":{"id":"' .. id .. '"}}'
    requests[#requests + 1] = wrk.format("POST", "/graphql", headers, body)
  end
  assert(#requests > 0, "no agenda ids in " .. ids_file)
  -- Threads start at different ids so they do not ask for the same agenda in lockstep.
  next_index = (math.random(#requests) - 1) + 1
end

function request()
  local r = requests[next_index]
  next_index = next_index % #requests + 1
  return r
end

-- Any non-200 answer is counted by wrk as a non-2xx response and reported by the driver.
function done(summary, latency, requests_)
  local seconds = summary.duration / 1e6
  io.write(string.format(
    "RESULT rps=%.0f p50_ms=%.3f p99_ms=%.3f max_ms=%.3f requests=%d non2xx=%d errors=%d\n",
    summary.requests / seconds,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
    summary.requests, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
