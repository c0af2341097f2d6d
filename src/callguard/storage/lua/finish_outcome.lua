-- A cluster's last step of an outcome, once its counter and block are
-- written: KEYS[1] the intent key, ARGV[1] the outcome.
redis.call('HSET', KEYS[1], 'outcome', ARGV[1])
redis.call('HDEL', KEYS[1], 'pending')
return 1
