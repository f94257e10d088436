-- wrk load for Mini Ledger. The scenario and its parameters come from the environment:
--   BENCH_SCENARIO  uniform | hot-sender | hot-pair | retry | bulk | read | ceiling
--                   (ceiling: uniform's requests, sent to bench/ceiling_app.py)
--   BENCH_MERCHANTS number of seeded merchants (names bench-m-0 ... bench-m-<n-1>)
--   BENCH_PREFIX    Idempotency-Key prefix, unique per run and scenario
--   BENCH_BATCH     items per POST /batches (bulk)
--   BENCH_IDS       file of transfer ids, one a line (read)
--   BENCH_API_KEY   the API key every request carries (an admin key: no rate limit)
-- done() prints one line "BENCH_JSON {...}" with status counts and latency percentiles.

local scenario = os.getenv("BENCH_SCENARIO") or "uniform"
local merchants = tonumber(os.getenv("BENCH_MERCHANTS") or "1000")
local prefix = os.getenv("BENCH_PREFIX") or "bench"
local batch_size = tonumber(os.getenv("BENCH_BATCH") or "1000")
local ids_file = os.getenv("BENCH_IDS")
local authorization = "Bearer " .. (os.getenv("BENCH_API_KEY") or "")
local json_headers = { ["Content-Type"] = "application/json", ["Authorization"] = authorization }
local read_headers = { ["Authorization"] = authorization }

local function submit_headers(key)
  return { ["Content-Type"] = "application/json", ["Authorization"] = authorization,
           ["Idempotency-Key"] = key }
end

local threads = {}

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  counter = 0
  new_keys = 0
  replays = 0
  statuses = {}
  history = {}
  remembered = 0
  math.randomseed(tid * 7919 + os.time())
  ids = {}
  if scenario == "read" and ids_file then
    for line in io.lines(ids_file) do table.insert(ids, line) end
  end
end

local function name(index)
  return "bench-m-" .. index
end

local function pair()
  if scenario == "hot-sender" then
    return 0, math.random(1, merchants - 1)
  elseif scenario == "hot-pair" then
    if counter % 2 == 0 then return 0, 1 else return 1, 0 end
  end
  local sender = math.random(0, merchants - 1)
  local receiver = math.random(0, merchants - 2)
  if receiver >= sender then receiver = receiver + 1 end
  return sender, receiver
end

local function transfer_body(sender, receiver)
  return string.format(
    '{"from_merchant":"%s","to_merchant":"%s","amount":"%d.%02d","currency":"USD"}',
    name(sender), name(receiver), math.random(1, 99), math.random(0, 99))
end

local function bulk_request()
  local items = {}
  for i = 1, batch_size do
    counter = counter + 1
    new_keys = new_keys + 1
    local sender, receiver = pair()
    items[i] = string.format(
      '{"idempotency_key":"%s-%d-%d","from_merchant":"%s","to_merchant":"%s","amount":"%d.%02d","currency":"USD"}',
      prefix, tid, counter, name(sender), name(receiver), math.random(1, 99), math.random(0, 99))
  end
  local body = '{"transfers":[' .. table.concat(items, ",") .. ']}'
  return wrk.format("POST", "/v1/batches", json_headers, body)
end

function request()
  if scenario == "read" then
    counter = counter + 1
    if #ids == 0 or counter % 2 == 0 then
      return wrk.format("GET", "/v1/merchants/" .. name(math.random(0, merchants - 1)), read_headers)
    end
    return wrk.format("GET", "/v1/transfers/" .. ids[math.random(1, #ids)], read_headers)
  elseif scenario == "bulk" then
    return bulk_request()
  end
  if scenario == "retry" and remembered > 0 and math.random() < 0.2 then
    local earlier = history[math.random(1, remembered)]
    replays = replays + 1
    return wrk.format("POST", "/v1/transfers", submit_headers(earlier[1]), earlier[2])
  end
  counter = counter + 1
  new_keys = new_keys + 1
  local key = prefix .. "-" .. tid .. "-" .. counter
  local body = transfer_body(pair())
  if scenario == "retry" then
    local slot = ((counter - 1) % 1000) + 1
    history[slot] = { key, body }
    if slot > remembered then remembered = slot end
  end
  return wrk.format("POST", "/v1/transfers", submit_headers(key), body)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local counts = {}
  local sent_new, sent_replays = 0, 0
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do
      counts[tostring(status)] = (counts[tostring(status)] or 0) + count
    end
    sent_new = sent_new + thread:get("new_keys")
    sent_replays = sent_replays + thread:get("replays")
  end
  local parts = {}
  for status, count in pairs(counts) do
    table.insert(parts, string.format('"%s":%d', status, count))
  end
  io.write(string.format(
    'BENCH_JSON {"statuses":{%s},"requests":%d,"duration_us":%d,"errors":%d,' ..
    '"new_keys":%d,"replays":%d,"latency_us":{"p50":%d,"p95":%d,"p99":%d,"max":%d}}\n',
    table.concat(parts, ","), summary.requests, summary.duration,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    sent_new, sent_replays,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max))
end
