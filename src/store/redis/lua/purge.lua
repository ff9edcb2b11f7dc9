-- purge: ARGV: prefix, now (epoch seconds), how many at most. Forgets finished documents whose
-- expiresAt has passed (only finished ones are in P.."expires"): the key, if Redis has not
-- expired it already, and every index entry. Returns {'ok', how many were forgotten}.
local uuids = redis.call('ZRANGEBYSCORE', P .. 'expires', '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
for _, uuid in ipairs(uuids) do
  redis.call('DEL', doc_key(uuid))
  unindex(uuid)
end
return {'ok', tostring(#uuids)}
