-- delete: KEYS[1] the document key; ARGV: prefix, uuid, the version to delete ('' for any).
-- Removes the document and its index entries; with a version, only if it is still that one.
local uuid = ARGV[2]
local raw = redis.call('GET', KEYS[1])
if not raw then
  forget_remnants(uuid)
  return {'notfound'}
end
if ARGV[3] ~= '' then
  local old, unreadable = decode(raw)
  if not old then
    return unreadable
  end
  if old.version ~= tonumber(ARGV[3]) then
    return {'conflict'}
  end
end
redis.call('DEL', KEYS[1])
unindex(uuid)
return {'ok'}
