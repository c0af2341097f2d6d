-- The silent-call block of a callee for a client: field "silent:{client}"
-- of the callee hash key holds the newest such call's time (UTC ISO).
local function block_silent(key, field, at)
  local old = redis.call('HGET', key, field)
  if (not old) or at > old then redis.call('HSET', key, field, at) end
end
