-- Decide every rate limit of one request in one round trip (GCRA).
-- The Lua twin of algorithms.decide(); the tests run both on the same inputs.
-- KEYS[1..n]: the TAT key of limit i (microseconds on the server clock);
-- KEYS[n+1..]: the "limited now" sets named by the limits (sorted sets of
--              limit keys scored by the time they may retry, bounded, expiring).
-- ARGV[1]: n, the number of limits; ARGV[2]: the most members a set keeps.
-- Then one argument per limit, five numbers separated by spaces (one argument
-- rather than five keeps the client's encoding work small): interval_us,
-- capacity_us (burst * interval), cost, enforce (1 refuses; 0 is shadow:
-- counted, never blocking), and the index in KEYS of the set that records its
-- refusals (0: none).
-- Returns, per limit: {allowed, remaining, retry_after_us, reset_after_us},
-- flattened, preceded by the overall verdict (1 admitted, 0 refused).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = tonumber(ARGV[1])
local keep = tonumber(ARGV[2])
local blocked = false
local out = {}
local writes = {}
for i = 1, n do
  local f1, f2, f3, f4, f5 = string.match(ARGV[2 + i], '(%S+) (%S+) (%S+) (%S+) (%S+)')
  local interval = tonumber(f1)
  local capacity = tonumber(f2)
  local cost = tonumber(f3)
  local enforce = f4 == '1'
  local track = tonumber(f5)
  local stored = redis.call('GET', KEYS[i])
  local base = now
  if stored then
    local tat = tonumber(stored)
    if tat > now then base = tat end
  end
  local new_tat = base + cost * interval
  local allow_at = new_tat - capacity
  local allowed, remaining, retry_after, reset_after
  if cost * interval > capacity then
    allowed, remaining, retry_after, reset_after = 0, 0, capacity, base - now
  elseif allow_at <= now then
    allowed = 1
    remaining = math.floor((capacity - (new_tat - now)) / interval + 1e-9)
    retry_after = 0
    reset_after = new_tat - now
    writes[i] = new_tat
  else
    allowed = 0
    remaining = math.floor((capacity - (base - now)) / interval + 1e-9)
    retry_after = allow_at - now
    reset_after = base - now
  end
  if remaining < 0 then remaining = 0 end
  if allowed == 0 and enforce then blocked = true end
  if allowed == 0 and track > 0 then
    -- Remember the refused key until it may retry: bounded (the soonest to
    -- expire go first) and expiring with its last member.
    local set = KEYS[track]
    local until_ms = math.ceil((now + retry_after) / 1000)
    redis.call('ZREMRANGEBYSCORE', set, '-inf', math.floor(now / 1000))
    redis.call('ZADD', set, until_ms, KEYS[i])
    local size = redis.call('ZCARD', set)
    if size > keep then redis.call('ZREMRANGEBYRANK', set, 0, size - keep - 1) end
    local ttl_ms = math.ceil(retry_after / 1000) + 1
    if redis.call('PTTL', set) < ttl_ms then redis.call('PEXPIRE', set, ttl_ms) end
  end
  out[#out + 1] = allowed
  out[#out + 1] = remaining
  out[#out + 1] = math.ceil(retry_after)
  out[#out + 1] = math.ceil(reset_after)
end
if not blocked then
  for i = 1, n do
    local new_tat = writes[i]
    if new_tat then
      local ttl_ms = math.ceil((new_tat - now) / 1000)
      if ttl_ms < 1 then ttl_ms = 1 end
      redis.call('SET', KEYS[i], string.format('%.0f', new_tat), 'PX', ttl_ms)
    end
  end
end
table.insert(out, 1, blocked and 0 or 1)
return out
