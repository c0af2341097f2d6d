-- Extends the load lock KEYS[1] by ARGV[2] ms while it holds our token ARGV[1].
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
