-- Give the lock back (only if this token holds it) and, after a failed recompute, back off.
-- KEYS: lock, backoff.
-- ARGV: token, backoff_ms ('0': no backoff), backoff_cap_ms, backoff_keep_ms, channel, message.
-- The backoff hash holds the failures in a row (n) and the time (us) before which no
-- stale value is recomputed (until); each failure doubles the pause, up to the cap.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
local base = tonumber(ARGV[2])
if base > 0 then
  local n = redis.call('HINCRBY', KEYS[2], 'n', 1)
  local pause = math.min(base * 2 ^ (n - 1), tonumber(ARGV[3]))
  redis.call('HSET', KEYS[2], 'until', string.format('%.0f', now + pause * 1000))
  redis.call('PEXPIRE', KEYS[2], math.max(1, tonumber(ARGV[4])))
end
redis.call('PUBLISH', ARGV[5], ARGV[6])
return 1
