-- record_call for one intent (a cluster: its callee hash's slot): KEYS[1]
-- the callee hash; ARGV: its caps (read_caps), client, ref, now ms.
local keep, limits, a = read_caps(1)
return record_call(KEYS[1], ARGV[a], ARGV[a + 1], ARGV[a + 2], keep, limits)
