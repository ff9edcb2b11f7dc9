-- import: KEYS[1] the document key; ARGV as for create, then the version to replace ('' to
-- insert only). Writes a document as given, its version kept, for a copy from another store:
-- inserted if its key is free, else (with a version) replacing the stored one whole, fixed
-- fields too, only if that is still the stored version. Index entries follow the new document.
local uuid, status, job_type = ARGV[2], ARGV[4], ARGV[6]
local raw = redis.call('GET', KEYS[1])
if ARGV[9] == '' then
  if raw then
    return {'exists'}
  end
  forget_remnants(uuid)
else
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
  unindex(uuid)
end
redis.call('SET', KEYS[1], ARGV[3])
redis.call('ZADD', P .. 'all', 0, uuid)
redis.call('ZADD', P .. 'type:' .. job_type, 0, uuid)
redis.call('HSET', P .. 'types', uuid, job_type)
redis.call('ZADD', P .. 'status:' .. status, 0, uuid)
redis.call('ZADD', P .. 'updated:' .. status, ARGV[5], uuid)
set_expiry(uuid, status, ARGV[7], ARGV[8])
return {'ok'}
