-- lease_acquire: KEYS[1] the lease hash; ARGV: holder, held until, now (epoch seconds).
-- Grants the lease when nobody holds it, the holder asks again, or its time has run out;
-- returns {holder, until, version} as the lease stands afterwards.
local current = redis.call('HMGET', KEYS[1], 'holder', 'expires_at', 'version')
local holder, expires_at, version = current[1], current[2], current[3]
if not holder or holder == ARGV[1] or tonumber(expires_at) <= tonumber(ARGV[3]) then
  version = tostring((tonumber(version) or 0) + 1)
  redis.call('HSET', KEYS[1], 'holder', ARGV[1], 'expires_at', ARGV[2], 'version', version)
  return {ARGV[1], ARGV[2], version}
end
return {holder, expires_at, version}
