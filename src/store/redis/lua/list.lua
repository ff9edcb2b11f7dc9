-- list: ARGV: prefix, the index to walk (P-relative: 'all', 'type:T' or 'status:S'), the uuid
-- to start after ('' from the start), how many documents, status ('' any), updated before
-- ('' any), how many index entries this call may read, 'desc' to walk in descending uuid order
-- ('' ascending), the queue ('' any: else only documents whose queueKwargs.queue is it, read
-- from the JSON). Walks the index in uuid order and
-- returns {'ok', resume, uuid1, json1, uuid2, json2, ...}: `resume` is '' when the page is
-- full or the index ends, else the uuid to start after in the next call (the read budget
-- ran out: one call never blocks the server for long). Entries whose key expired are skipped.
local index = P .. ARGV[2]
local limit, status, budget = tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[7])
local desc, queue = ARGV[8] == 'desc', ARGV[9]
local before = nil
if ARGV[6] ~= '' then
  before = tonumber(ARGV[6])
end

-- When the document was last written, from the status index it is in (nil: none).
local function written_at(uuid)
  if status ~= '' then
    return redis.call('ZSCORE', P .. 'updated:' .. status, uuid)
  end
  for _, s in ipairs(STATUSES) do
    local score = redis.call('ZSCORE', P .. 'updated:' .. s, uuid)
    if score then
      return score
    end
  end
  return nil
end

local function matches(uuid)
  if status == '' and not before then
    return true
  end
  local score = written_at(uuid)
  return score and (not before or tonumber(score) < before)
end

-- Whether the stored JSON names the queue asked for (any queue when none is).
local function on_queue(raw)
  if queue == '' then
    return true
  end
  local ok, doc = pcall(cjson.decode, raw)
  return ok and type(doc) == 'table' and type(doc.queueKwargs) == 'table' and doc.queueKwargs.queue == queue
end

local out = {'ok', ''}
local found, scanned = 0, 0
-- `bound` is the exclusive end already read: the next read starts past it.
local bound = nil
if ARGV[3] ~= '' then
  bound = '(' .. ARGV[3]
end
while scanned < budget do
  local want = math.min(math.max(limit - found, 16), budget - scanned)
  local members
  if desc then
    members = redis.call('ZREVRANGEBYLEX', index, bound or '+', '-', 'LIMIT', 0, want)
  else
    members = redis.call('ZRANGEBYLEX', index, bound or '-', '+', 'LIMIT', 0, want)
  end
  for _, uuid in ipairs(members) do
    scanned = scanned + 1
    bound = '(' .. uuid
    if matches(uuid) then
      local raw = redis.call('GET', doc_key(uuid))
      if raw and on_queue(raw) then
        out[#out + 1] = uuid
        out[#out + 1] = raw
        found = found + 1
        if found == limit then
          return out
        end
      end
    end
  end
  if #members < want then
    return out
  end
end
out[2] = string.sub(bound, 2)
return out
