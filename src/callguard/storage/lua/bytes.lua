-- Little-endian integers of a register bucket value (1-based positions).
local function reg_u16(s, p) local a, b = string.byte(s, p, p + 1) return a + 256 * b end
local function reg_u32(s, p)
  local a, b, c, d = string.byte(s, p, p + 3)
  return a + 256 * (b + 256 * (c + 256 * d))
end
