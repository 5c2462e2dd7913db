-- Take or renew one of LIMIT slots under a key; the Lua twin of algorithms.acquire().
-- KEYS[1]: a sorted set of holder -> expiry (microseconds, server clock).
-- ARGV: holder, limit, ttl_us.
-- Returns {granted (1/0), holders now, microseconds until the earliest other lease expires}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local key, holder = KEYS[1], ARGV[1]
local limit, ttl = tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', key, '-inf', string.format('%.0f', now))
local granted = 0
if redis.call('ZSCORE', key, holder) or redis.call('ZCARD', key) < limit then
  granted = 1
  redis.call('ZADD', key, string.format('%.0f', now + ttl), holder)
end
local count = redis.call('ZCARD', key)
local wait = 0
local first = redis.call('ZRANGE', key, 0, 1, 'WITHSCORES')
for i = 1, #first, 2 do
  if first[i] ~= holder then
    wait = tonumber(first[i + 1]) - now
    break
  end
end
if count > 0 then
  -- The key lives as long as its longest lease.
  local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  local ttl_ms = math.ceil((tonumber(last[2]) - now) / 1000)
  if ttl_ms < 1 then ttl_ms = 1 end
  redis.call('PEXPIRE', key, ttl_ms)
end
return {granted, count, math.ceil(wait)}
