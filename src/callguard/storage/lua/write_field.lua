-- Writes value into field of the hash key unless the stored value is newer:
-- the first width characters hold a sortable timestamp (0: the whole value).
-- Answers written, added (1 or 0 each; added: the field was new).
local function write_if_not_older(key, field, value, width)
  local old = redis.call('HGET', key, field)
  local a, b = value, old
  if width > 0 then
    a = string.sub(value, 1, width)
    if old then b = string.sub(old, 1, width) end
  end
  if (not old) or a >= b then
    redis.call('HSET', key, field, value)
    if old then return 1, 0 end
    return 1, 1
  end
  return 0, 0
end
