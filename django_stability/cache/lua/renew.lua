-- Extend a lock this token still holds. KEYS: lock. ARGV: token, lease_ms.
-- Returns 1 when renewed, 0 when the lock is gone or held by another token.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
  return 1
end
return 0
