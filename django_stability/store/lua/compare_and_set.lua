-- Set a value only if the current one is as expected.
-- KEYS[1]: the key. ARGV: expected ("" with ARGV[4] == "1" means absent), value, ttl_ms, expect_absent.
local current = redis.call('GET', KEYS[1])
if ARGV[4] == '1' then
  if current then return 0 end
elseif current ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
