-- Everything a batch of intents needs, in one command (one round trip, one
-- reply to parse). KEYS: the operators, meta and mandates hashes, the hidden
-- loads' set, D outcome-counter hashes (one a day of the campaign silent-rate
-- window), R coverage hashes of named registers, then per intent with a valid
-- callee its register bucket and callee hash. ARGV: the number of operator
-- ids, the ids, the number of mandate fields, the fields
-- ("{client}|{operator}"), D, the number of outcome fields, the fields
-- ("{campaign}|{outcome}"), R, the number P of coverage units and the units
-- ("+1NPA", "*"), then per intent the number's suffix in its bucket and the
-- client id.
reg_hidden_key = KEYS[4]
local n = tonumber(ARGV[1])
local operators = {}
for j = 1, n do
  operators[j] = redis.call('HGET', KEYS[1], ARGV[j + 1])
end
local out = {operators}
out[2] = redis.call('HMGET', KEYS[2], 'operators_version', 'directory_generation', 'directory_as_of', 'mandates_version')
local nm = tonumber(ARGV[n + 2])
local mandates = {}
for j = 1, nm do mandates[j] = redis.call('HGET', KEYS[3], ARGV[n + 2 + j]) end
local b = n + 3 + nm
local days = tonumber(ARGV[b])
local nf = tonumber(ARGV[b + 1])
local fields = {}
for j = 1, nf do fields[j] = ARGV[b + 1 + j] end
local counts = {}
if nf > 0 then
  for d = 1, days do counts[d] = redis.call('HMGET', KEYS[4 + d], unpack(fields)) end
end
out[3] = counts
out[4] = mandates
local a = b + 2 + nf
local nr, np = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
local units = {}
for j = 1, np do units[j] = ARGV[a + 1 + j] end
local cover = {}
for r = 1, nr do cover[r] = redis.call('HMGET', KEYS[4 + days + r], unpack(units)) end
out[5] = cover
a = a + 2 + np
for i = 5 + days + nr, #KEYS, 2 do
  local suffix, client = ARGV[a], ARGV[a + 1]
  a = a + 2
  out[#out + 1] = register(KEYS[i], tonumber(suffix), client)
  out[#out + 1] = redis.call('HMGET', KEYS[i + 1], 'consent:' .. client, 'contract:' .. client,
                             'optout:' .. client, 'optout:*', 'calls:' .. client, 'silent:' .. client,
                             'request:' .. client, 'ebr_transaction:' .. client, 'ebr_inquiry:' .. client,
                             'disconnected')
end
return out
