-- Read a protected value and, when it needs recomputing, try to take its lock: one round trip.
-- The envelope format is described in django_stability/cache/envelope.py.
-- KEYS: value, lock, backoff.
-- ARGV: token, lease_ms, lock ('1' to try the lock when the value is stale or absent),
--       xfetch factor (refresh early when time left <= compute time x factor; '0' never),
--       stale_if_error_us (a stale value this old or younger is not recomputed while backing off).
-- Returns {value or false, state, soft_us, compute_us, locked, backoff, now_us}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local value = redis.call('GET', KEYS[1])
local state, soft, delta = 'absent', 0, 0
if value then
  state = 'fresh'
  local s, d = string.match(string.sub(value, 1, 64), '^\255DS1|(%d+)|(%d+)|%d+|')
  if s then
    soft, delta = tonumber(s), tonumber(d)
    if soft > 0 and soft <= now then state = 'stale' end
  end
end
local want, backoff = false, 0
if ARGV[3] == '1' then
  if state == 'absent' then
    want = true
  elseif state == 'stale' then
    want = true
    local untl = redis.call('HGET', KEYS[3], 'until')
    if untl and tonumber(untl) > now then
      backoff = 1
      if now - soft <= tonumber(ARGV[5]) then want = false end
    end
  elseif soft > 0 and delta > 0 and (soft - now) <= delta * tonumber(ARGV[4]) then
    want = true
  end
end
local locked = 0
if want and redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', tonumber(ARGV[2])) then
  locked = 1
end
return {value or false, state, string.format('%.0f', soft), string.format('%.0f', delta),
        locked, backoff, string.format('%.0f', now)}
