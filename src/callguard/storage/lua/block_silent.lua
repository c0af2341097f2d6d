-- block_silent for one callee (a cluster: its slot): KEYS[1] the callee
-- hash; ARGV the field, the call's time.
block_silent(KEYS[1], ARGV[1], ARGV[2])
return 1
