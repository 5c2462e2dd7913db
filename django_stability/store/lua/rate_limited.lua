-- The keys of a "limited now" set that may not retry yet, soonest first.
-- KEYS[1]: the set; ARGV[1]: the most to return. Returns {key, retry_after_ms, ...}.
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
local members = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1, 'WITHSCORES')
local out = {}
for i = 1, #members, 2 do
  out[#out + 1] = members[i]
  out[#out + 1] = tonumber(members[i + 1]) - now_ms
end
return out
