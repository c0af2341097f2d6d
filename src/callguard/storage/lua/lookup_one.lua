-- The register part of the lookup for one bucket (a cluster's slot at a
-- time): KEYS[1] the bucket; ARGV the suffix, the client id, then the
-- hidden loads' ids (read by the caller, once per batch).
reg_hidden = {}
for i = 3, #ARGV do reg_hidden[tonumber(ARGV[i])] = true end
return register(KEYS[1], tonumber(ARGV[1]), ARGV[2])
