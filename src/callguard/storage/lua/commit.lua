-- Makes a staged load visible, all at once. KEYS: lock, hidden, census, loads,
-- meta[, the coverage hash of a named register]. ARGV: lock token, load id,
-- scope, log entry ('' for none), the number m of meta fields to set, m
-- field/value pairs, the number c of coverage fields to set, '1' to drop the
-- other coverage fields first (a load for every number) or '0', c
-- field/value pairs, then (as_of ISO day, census delta) pairs.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return redis.error_reply('the register load lock was lost') end
redis.call('SREM', KEYS[2], ARGV[2])
local m = tonumber(ARGV[5])
for j = 1, m do redis.call('HSET', KEYS[5], ARGV[4 + 2 * j], ARGV[5 + 2 * j]) end
local at = 6 + 2 * m
local c = tonumber(ARGV[at])
if ARGV[at + 1] == '1' then
  local held = redis.call('HGETALL', KEYS[6])
  for i = 1, #held, 2 do
    if string.byte(held[i], 1) ~= 35 then redis.call('HDEL', KEYS[6], held[i]) end
  end
end
for j = 1, c do redis.call('HSET', KEYS[6], ARGV[at + 2 * j], ARGV[at + 1 + 2 * j]) end
for i = at + 2 + 2 * c, #ARGV, 2 do
  local field = ARGV[3] .. '|' .. ARGV[i]
  local now = redis.call('HINCRBY', KEYS[3], field, tonumber(ARGV[i + 1]))
  if now <= 0 then redis.call('HDEL', KEYS[3], field) end
end
if ARGV[4] ~= '' then
  redis.call('LPUSH', KEYS[4], ARGV[4])
  redis.call('LTRIM', KEYS[4], 0, 999)
  redis.call('HSET', KEYS[5], 'register_last_load', ARGV[4])
end
return 1
