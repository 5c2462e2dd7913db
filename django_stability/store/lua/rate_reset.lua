-- Forget rate counters (an admin reset after a captcha or a support call).
-- KEYS[1]: the "limited now" set they may be recorded in; KEYS[2..]: the TAT keys.
-- Returns how many counters existed.
local found = 0
for i = 2, #KEYS do
  found = found + redis.call('DEL', KEYS[i])
  redis.call('ZREM', KEYS[1], KEYS[i])
end
return found
