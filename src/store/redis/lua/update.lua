-- update: KEYS[1] the document key; ARGV as for create, then the version the writer read.
-- Compare-and-swap: writes only if the stored version is still that one and jobType and
-- expiresAt are unchanged, moving the document's index entries with it.
local uuid, status = ARGV[2], ARGV[4]
local raw = redis.call('GET', KEYS[1])
if not raw then
  return {'notfound'}
end
local old, unreadable = decode(raw)
if not old then
  return unreadable
end
if old.version ~= tonumber(ARGV[9]) then
  return {'conflict'}
end
if old.jobType ~= ARGV[6] then
  return {'fixed', 'jobType'}
end
local old_expires = old.expiresAt
if old_expires == cjson.null then
  old_expires = nil
end
if old_expires ~= tonumber(ARGV[7]) then
  return {'fixed', 'expiresAt'}
end
redis.call('SET', KEYS[1], ARGV[3])
if old.status ~= status then
  redis.call('ZREM', P .. 'status:' .. old.status, uuid)
  redis.call('ZADD', P .. 'status:' .. status, 0, uuid)
  redis.call('ZREM', P .. 'updated:' .. old.status, uuid)
end
redis.call('ZADD', P .. 'updated:' .. status, ARGV[5], uuid)
set_expiry(uuid, status, ARGV[7], ARGV[8])
return {'ok'}
