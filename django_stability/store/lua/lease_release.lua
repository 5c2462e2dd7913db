-- Give a slot back. KEYS[1]: the lease set. ARGV: holder.
-- Returns 1 when the holder still held an unexpired lease, else 0.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local expiry = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[1], ARGV[1])
if expiry and tonumber(expiry) > now then
  return 1
end
return 0
