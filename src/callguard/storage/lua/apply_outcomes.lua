-- Applies a batch of call outcomes. Per outcome: unknown intent -> 0, already
-- reported -> -1, else its campaign: the outcome is counted for its campaign
-- and day and, when silent or abandoned, blocks the callee for the client.
-- KEYS: per outcome its intent key and its day's outcome counters. ARGV: the
-- callee hashes' key prefix, counter lifetime s; then per outcome: outcome,
-- at (UTC ISO), silent '1'/'0'.
local callees, lifetime = ARGV[1], tonumber(ARGV[2])
local a = 3
local out = {}
for i = 1, #KEYS, 2 do
  local key, counters = KEYS[i], KEYS[i + 1]
  local outcome, at, silent = ARGV[a], ARGV[a + 1], ARGV[a + 2]
  a = a + 3
  local memo = redis.call('HMGET', key, 'callee', 'client', 'campaign', 'outcome')
  local answer
  if not memo[1] then
    answer = 0
  elseif memo[4] then
    answer = -1
  else
    redis.call('HSET', key, 'outcome', outcome)
    redis.call('HINCRBY', counters, memo[3] .. '|' .. outcome, 1)
    redis.call('EXPIRE', counters, lifetime)
    if silent == '1' then block_silent(callees .. memo[1], 'silent:' .. memo[2], at) end
    answer = memo[3]
  end
  out[#out + 1] = answer
end
return out
