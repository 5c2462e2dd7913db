-- Add to a counter; a new counter expires after ttl_ms. KEYS[1]: the counter. ARGV: amount, ttl_ms.
local value = redis.call('INCRBY', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return value
