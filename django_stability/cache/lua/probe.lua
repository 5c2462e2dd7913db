-- What has_key(), ttl() and pttl() need to know of a key, without sending its value.
-- KEYS: value. Returns {exists (1/0), soft_us ('' for a plain value), now_us, pttl_ms}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local value = redis.call('GET', KEYS[1])
if not value then
  return {0, '', string.format('%.0f', now), -2}
end
local s = string.match(string.sub(value, 1, 64), '^\255DS1|(%d+)|%d+|%d+|')
return {1, s or '', string.format('%.0f', now), redis.call('PTTL', KEYS[1])}
