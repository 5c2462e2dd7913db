-- Extend a lease still held. KEYS[1]: the lease set. ARGV: holder, ttl_us.
-- Returns 1 when renewed, 0 when the lease had expired or was released.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local key, holder = KEYS[1], ARGV[1]
local expiry = redis.call('ZSCORE', key, holder)
if not expiry or tonumber(expiry) <= now then
  return 0
end
local new_expiry = now + tonumber(ARGV[2])
redis.call('ZADD', key, string.format('%.0f', new_expiry), holder)
local ttl_ms = redis.call('PTTL', key)
local want = math.ceil((new_expiry - now) / 1000)
if ttl_ms < want then
  redis.call('PEXPIRE', key, want)
end
return 1
