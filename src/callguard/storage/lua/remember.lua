-- remember for one intent (a cluster: its intent key's slot): KEYS[1] the
-- intent key; ARGV callee, client, campaign, memory seconds.
remember(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4])
return 1
