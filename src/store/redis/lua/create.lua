-- create: KEYS[1] the document key; ARGV: prefix, uuid, json, status, updatedAt, jobType,
-- expiresAt ('' for none), expiry in ms. Writes the document and its index entries unless it exists.
local uuid, status, job_type = ARGV[2], ARGV[4], ARGV[6]
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {'exists'}
end
forget_remnants(uuid)
redis.call('SET', KEYS[1], ARGV[3])
redis.call('ZADD', P .. 'all', 0, uuid)
redis.call('ZADD', P .. 'type:' .. job_type, 0, uuid)
redis.call('HSET', P .. 'types', uuid, job_type)
redis.call('ZADD', P .. 'status:' .. status, 0, uuid)
redis.call('ZADD', P .. 'updated:' .. status, ARGV[5], uuid)
set_expiry(uuid, status, ARGV[7], ARGV[8])
return {'ok'}
