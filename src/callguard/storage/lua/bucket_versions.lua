-- The versions of a bucket value: {id, first byte, last byte} each; s is
-- the bucket KEYS[1] holds.
local function reg_versions(s)
  local out, pos = {}, 1
  while s and pos <= #s do
    local stop = pos + 8 + reg_u32(s, pos + 4)
    out[#out + 1] = {reg_u32(s, pos), pos, stop - 1}
    pos = stop
  end
  return out
end
local s = redis.call('GET', KEYS[1])
