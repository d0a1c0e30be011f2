-- wrk script for bench_multiplex.py: each request names a random model in the header HEADER
-- (none when HEADER is empty) and each answer's "hit" is counted.
local count = tonumber(os.getenv("MODELS"))
local header = os.getenv("HEADER") or ""
local path = os.getenv("PATH_") or "/"
local threads = {}
hits = 0
answers = 0

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16) % 1000)
end

function request()
  local headers = {}
  if header ~= "" then
    headers[header] = "model-" .. math.random(0, count - 1)
  end
  return wrk.format("GET", path, headers)
end

function response(status, headers, body)
  answers = answers + 1
  if string.find(body, "true", 1, true) then
    hits = hits + 1
  end
end

function done(summary, latency, requests)
  for _, thread in ipairs(threads) do
    io.write(string.format("HITS %d %d\n", thread:get("hits"), thread:get("answers")))
  end
end
