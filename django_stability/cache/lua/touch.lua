-- touch() for protected and plain values alike. KEYS: value.
-- ARGV: timeout_ms ('-1': no expiry). A plain value gets PEXPIRE/PERSIST as django-redis
-- gives it; a protected value gets a new soft expiry and keeps its time served past it.
-- Returns 1 when the key exists, else 0.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local timeout = tonumber(ARGV[1])
local value = redis.call('GET', KEYS[1])
if not value then
  return 0
end
local s, d, st = string.match(string.sub(value, 1, 64), '^\255DS1|(%d+)|(%d+)|(%d+)|')
if not s then
  if timeout < 0 then
    return redis.call('PERSIST', KEYS[1])
  end
  return redis.call('PEXPIRE', KEYS[1], timeout)
end
if timeout == 0 then
  redis.call('DEL', KEYS[1])
  return 1
end
local header = string.format('\255DS1|%s|%s|%s|', s, d, st)
local payload = string.sub(value, #header + 1)
local soft = tonumber(s)
local pttl = redis.call('PTTL', KEYS[1])
local extra = 0
if soft > 0 and pttl > 0 then extra = math.max(0, pttl - (soft - now) / 1000) end
if timeout < 0 then
  redis.call('SET', KEYS[1], string.format('\255DS1|0|%s|%s|', d, st) .. payload)
  return 1
end
local new_soft = now + timeout * 1000
redis.call('SET', KEYS[1], string.format('\255DS1|%.0f|%s|%s|', new_soft, d, st) .. payload,
           'PX', math.max(1, math.floor(timeout + extra)))
return 1
