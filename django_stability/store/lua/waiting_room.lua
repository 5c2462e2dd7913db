-- Wait in line for one of LIMIT places; the Lua twin of algorithms.wait_in_line().
-- KEYS[1]: the admitted visitors, a sorted set of ticket -> expiry (a lease set).
-- KEYS[2]: the line, a sorted set of ticket -> arrival (microseconds, server clock).
-- KEYS[3]: the line's deadlines, a sorted set of ticket -> when it loses its place.
-- ARGV: ticket ('' only looks), limit, active_ttl_us, queue_ttl_us.
-- Returns {admitted (1/0), place in line (1-based, 0 when admitted), admitted now, waiting now}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local active, line, seen = KEYS[1], KEYS[2], KEYS[3]
local ticket, limit = ARGV[1], tonumber(ARGV[2])
local active_ttl, queue_ttl = tonumber(ARGV[3]), tonumber(ARGV[4])
local nowf = string.format('%.0f', now)

redis.call('ZREMRANGEBYSCORE', active, '-inf', nowf)
-- Visitors who stopped coming back lose their place.
local gone = redis.call('ZRANGEBYSCORE', seen, '-inf', nowf)
for i = 1, #gone, 500 do
  redis.call('ZREM', line, unpack(gone, i, math.min(i + 499, #gone)))
end
redis.call('ZREMRANGEBYSCORE', seen, '-inf', nowf)

local admitted, place = 0, 0
if ticket ~= '' then
  if redis.call('ZSCORE', active, ticket) then
    redis.call('ZADD', active, string.format('%.0f', now + active_ttl), ticket)
    admitted = 1
  else
    if not redis.call('ZSCORE', line, ticket) then
      redis.call('ZADD', line, nowf, ticket)
    end
    local rank = redis.call('ZRANK', line, ticket)
    local free = limit - redis.call('ZCARD', active)
    if rank < free then
      redis.call('ZREM', line, ticket)
      redis.call('ZREM', seen, ticket)
      redis.call('ZADD', active, string.format('%.0f', now + active_ttl), ticket)
      admitted = 1
    else
      redis.call('ZADD', seen, string.format('%.0f', now + queue_ttl), ticket)
      place = rank + 1
    end
  end
end

-- Each key lives as long as its latest deadline.
local function expire_at_last(key)
  local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if #last == 0 then return end
  local ttl_ms = math.ceil((tonumber(last[2]) - now) / 1000)
  if ttl_ms < 1 then ttl_ms = 1 end
  redis.call('PEXPIRE', key, ttl_ms)
end
expire_at_last(active)
expire_at_last(seen)
local waiting = redis.call('ZCARD', line)
if waiting > 0 then
  local ttl_ms = redis.call('PTTL', seen)
  if ttl_ms < 1 then ttl_ms = 1 end
  redis.call('PEXPIRE', line, ttl_ms)
else
  redis.call('DEL', line, seen)
end
return {admitted, place, redis.call('ZCARD', active), waiting}
