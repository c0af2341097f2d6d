-- Records a batch's allowed intents, atomically per batch: each capped one
-- counted (record_call), each recorded one remembered. KEYS: per intent its
-- callee hash and its intent key. ARGV: memory s; then per intent: client,
-- ref, now ms, capped '1'/'0', callee, campaign, its caps (read_caps).
local memory = tonumber(ARGV[1])
local a = 2
local out = {}
for i = 1, #KEYS, 2 do
  local client, ref, stamp, capped, callee, campaign = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5]
  local keep, limits
  keep, limits, a = read_caps(a + 6)
  local result = 1
  if capped == '1' then result = record_call(KEYS[i], client, ref, stamp, keep, limits) end
  if result == 1 then remember(KEYS[i + 1], callee, client, campaign, memory) end
  out[#out + 1] = result
end
return out
