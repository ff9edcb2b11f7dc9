-- Shared head of every document script (prepended to it): key names and index upkeep.
-- ARGV[1] is the store's key prefix P. A document lives at P.."doc:"..uuid as the JSON text
-- the store wrote; its index entries (members are uuids) live in:
--   P.."all", P.."type:"..jobType, P.."status:"..status  sorted sets, score 0 (uuid order)
--   P.."updated:"..status  sorted set, score updatedAt (oldest write first)
--   P.."expires"           sorted set, score expiresAt, finished documents only
--   P.."types"             hash uuid -> jobType (finds the type index of a vanished key)
local P = ARGV[1]
local STATUSES = {'queued', 'running', 'succeeded', 'failed', 'cancelled'}
local FINISHED = {succeeded = true, failed = true, cancelled = true}

local function doc_key(uuid)
  return P .. 'doc:' .. uuid
end

-- The stored document as a table, or nil and the reply that reports it unreadable.
local function decode(raw)
  local ok, doc = pcall(cjson.decode, raw)
  if not ok or type(doc) ~= 'table' or type(doc.version) ~= 'number' or type(doc.status) ~= 'string' then
    return nil, {'corrupt', raw}
  end
  return doc
end

-- A finished document with an expiry is listed for purge, and Redis drops its key at that
-- time (ms since the epoch) if it is still ahead by the server's clock: a document that
-- finishes after its expiry stays readable until the next purge. SET has cleared any older
-- expiry; a document that is not finished is not listed.
local function set_expiry(uuid, status, expires_at, expires_ms)
  if FINISHED[status] and expires_at ~= '' then
    redis.call('ZADD', P .. 'expires', expires_at, uuid)
    local time = redis.call('TIME')
    if tonumber(expires_ms) > tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000) then
      redis.call('PEXPIREAT', doc_key(uuid), expires_ms)
    end
  else
    redis.call('ZREM', P .. 'expires', uuid)
  end
end

-- Removes uuid from every index, whatever status it had.
local function unindex(uuid)
  redis.call('ZREM', P .. 'all', uuid)
  local job_type = redis.call('HGET', P .. 'types', uuid)
  if job_type then
    redis.call('ZREM', P .. 'type:' .. job_type, uuid)
  end
  for _, status in ipairs(STATUSES) do
    redis.call('ZREM', P .. 'status:' .. status, uuid)
    redis.call('ZREM', P .. 'updated:' .. status, uuid)
  end
  redis.call('ZREM', P .. 'expires', uuid)
  redis.call('HDEL', P .. 'types', uuid)
end

-- Index entries left by a document whose key Redis expired: removed before the uuid is used again.
local function forget_remnants(uuid)
  if redis.call('HEXISTS', P .. 'types', uuid) == 1 then
    unindex(uuid)
  end
end

