-- list_stale: ARGV: prefix, status, written before, the (updatedAt, uuid) to start after
-- ('' and '' from the start), how many documents, how many index entries this call may read.
-- Walks P.."updated:"..status oldest write first (a sorted set orders ties by uuid) and returns
-- {'ok', resume_time, resume_uuid, uuid1, time1, json1, ...}: resume_* are '' when the page is
-- full or the index ends, else the key to start after in the next call. Entries written at
-- the start key's time up to its uuid are passed over without counting against the budget.
local index = P .. 'updated:' .. ARGV[2]
local max = '(' .. ARGV[3]
local limit, budget = tonumber(ARGV[6]), tonumber(ARGV[7])
local after_time, after_uuid, min = nil, ARGV[5], '-inf'
if ARGV[4] ~= '' then
  after_time, min = tonumber(ARGV[4]), ARGV[4]
end

local out = {'ok', '', ''}
local found, scanned, offset = 0, 0, 0
local last_time, last_uuid = '', ''
while scanned < budget do
  local want = math.min(math.max(limit - found, 16), budget - scanned)
  local rows = redis.call('ZRANGEBYSCORE', index, min, max, 'WITHSCORES', 'LIMIT', offset, want)
  for i = 1, #rows, 2 do
    local uuid, time = rows[i], rows[i + 1]
    if not (after_time and tonumber(time) == after_time and uuid <= after_uuid) then
      scanned = scanned + 1
      last_time, last_uuid = time, uuid
      local raw = redis.call('GET', doc_key(uuid))
      if raw then
        out[#out + 1] = uuid
        out[#out + 1] = time
        out[#out + 1] = raw
        found = found + 1
        if found == limit then
          return out
        end
      end
    end
  end
  if #rows < 2 * want then
    return out
  end
  offset = offset + want
end
out[2], out[3] = last_time, last_uuid
return out
