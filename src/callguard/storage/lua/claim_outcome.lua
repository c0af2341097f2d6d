-- A cluster's first step of an outcome: KEYS[1] the intent key, ARGV[1] the
-- outcome. Answers 0 (unknown intent), -1 (reported before) or {callee,
-- client, campaign}. A claim stays 'pending' until finish_outcome: a claim
-- left pending by a crash is claimed again by the same outcome (redelivered).
local memo = redis.call('HMGET', KEYS[1], 'callee', 'client', 'campaign', 'outcome', 'pending')
if not memo[1] then return 0 end
if memo[4] or (memo[5] and memo[5] ~= ARGV[1]) then return -1 end
redis.call('HSET', KEYS[1], 'pending', ARGV[1])
return {memo[1], memo[2], memo[3]}
