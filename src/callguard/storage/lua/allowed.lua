-- An allowed intent, per key. read_caps(a) reads from ARGV[a] on an intent's
-- caps: keep ms (how long its callee's calls are kept: the pack's longest
-- window), the number L of limits and L pairs (window ms, max); it answers
-- keep, the limits and the position after them.
local function read_caps(a)
  local keep, nl = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  a = a + 2
  local limits = {}
  for j = 1, nl do
    limits[j] = {tonumber(ARGV[a]), tonumber(ARGV[a + 1])}
    a = a + 2
  end
  return keep, limits, a
end

-- Counts a call against the frequency caps in the callee hash key: the call
-- (ref, now ms as a string) is added to "calls:{client}" unless it is there
-- already (a redelivery) or a limit is full, which happens only when another
-- worker allowed a call to the same callee meanwhile. Answers 1 (recorded,
-- or recorded before) or the calls stored (a cap is full).
local function record_call(key, client, ref, stamp, keep, limits)
  local now = tonumber(stamp)
  local field = 'calls:' .. client
  local old = redis.call('HGET', key, field) or ''
  local kept, times, seen = {}, {}, false
  for ts, r in string.gmatch(old, '(%d+):(%x+)') do
    local t = tonumber(ts)
    if r == ref then seen = true end
    if t > now - keep then
      kept[#kept + 1] = ts .. ':' .. r
      times[#times + 1] = t
    end
  end
  if seen then return 1 end
  for _, limit in ipairs(limits) do
    local n = 0
    for _, t in ipairs(times) do
      if t > now - limit[1] then n = n + 1 end
    end
    if n >= limit[2] then return old end
  end
  kept[#kept + 1] = stamp .. ':' .. ref
  redis.call('HSET', key, field, table.concat(kept, ','))
  return 1
end

-- Remembers an allowed intent (its intent key) for memory seconds, so that
-- its outcome can be traced back; a redelivered intent keeps the first.
local function remember(key, callee, client, campaign, memory)
  if redis.call('EXISTS', key) == 0 then
    redis.call('HSET', key, 'callee', callee, 'client', client, 'campaign', campaign)
    redis.call('EXPIRE', key, memory)
  end
end
