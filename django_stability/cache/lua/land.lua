-- Store a computed value unless a value whose compute started later is already there;
-- release the lock if this token holds it; wake the waiters. The envelope format is
-- described in django_stability/cache/envelope.py.
-- KEYS: value, lock, backoff.
-- ARGV: token ('' when computed without the lock), payload, soft_ms ('-1': never stale),
--       hard_ms ('-1': no expiry, '0': do not store, and drop the current value), compute_us, started_us ('' for now),
--       channel, message, only_if_absent ('1'/'0').
-- Returns 1 when stored (or, with hard_ms '0', when a value was dropped), else 0.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local started = now
if ARGV[6] ~= '' then started = tonumber(ARGV[6]) end
local current = redis.call('GET', KEYS[1])
local store = ARGV[4] ~= '0'
local stored = 0
if current then
  local soft, s = string.match(string.sub(current, 1, 64), '^\255DS1|(%d+)|%d+|(%d+)|')
  -- add(): a stale value counts as absent, as an expired key would.
  local expired = soft and tonumber(soft) > 0 and tonumber(soft) <= now
  if ARGV[9] == '1' and not expired then store = false end
  if s and tonumber(s) > started then store = false end
  -- A timeout of 0 keeps nothing, and drops what was there (as django-redis's set() does).
  if ARGV[4] == '0' and ARGV[9] ~= '1' and not (s and tonumber(s) > started) then
    stored = redis.call('DEL', KEYS[1])
  end
end
if store then
  local soft_ms = tonumber(ARGV[3])
  local soft = 0
  if soft_ms >= 0 then soft = now + soft_ms * 1000 end
  local header = string.format('\255DS1|%.0f|%.0f|%.0f|', soft, tonumber(ARGV[5]), started)
  local hard = tonumber(ARGV[4])
  if hard > 0 then
    redis.call('SET', KEYS[1], header .. ARGV[2], 'PX', hard)
  else
    redis.call('SET', KEYS[1], header .. ARGV[2])
  end
  redis.call('DEL', KEYS[3])
  stored = 1
end
if ARGV[1] ~= '' and redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('DEL', KEYS[2])
end
redis.call('PUBLISH', ARGV[7], ARGV[8])
return stored
