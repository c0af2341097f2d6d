-- register(key, suffix, client) answers {every-client result, client result,
-- directory generation, named}, the results each as_of day * 65536 + payload,
-- each or false; named is a flat list {scope, day * 65536 + payload, ...} of
-- the named registers (scopes '@NAME') that list the number. The hidden loads
-- are either set by the caller (reg_hidden, ids as keys) or read once per
-- call from the set reg_hidden_key names.
local reg_hidden, reg_hidden_key = nil, nil
local function reg_find(s, body, n, fmt, suffix)
  local lo, hi
  if fmt == 0 then
    lo, hi = 0, n - 1
    while lo <= hi do
      local mid = math.floor((lo + hi) / 2)
      local v = reg_u16(s, body + 2 * mid)
      if v == suffix then return reg_u16(s, body + 2 * n + 2 * mid) end
      if v < suffix then lo = mid + 1 else hi = mid - 1 end
    end
    return nil
  end
  local base, bits = reg_u16(s, body), string.byte(s, body + 2)
  local index = body + 3
  local high = math.floor(suffix / 256)
  local want = suffix - 256 * high
  lo = reg_u16(s, index + 2 * high)
  if high < 39 then hi = reg_u16(s, index + 2 * high + 2) - 1 else hi = n - 1 end
  local lows = index + 80
  while lo <= hi do
    local mid = math.floor((lo + hi) / 2)
    local v = string.byte(s, lows + mid)
    if v == want then
      local at = mid * bits
      local byte = math.floor(at / 8)
      local b1, b2, b3 = string.byte(s, lows + n + byte, lows + n + byte + 2)
      local code = math.floor(((b1 or 0) + 256 * ((b2 or 0) + 256 * (b3 or 0))) / 2 ^ (at - 8 * byte)) % 2 ^ bits
      local days = math.floor(code / 2)
      if days > 0 then days = base + days - 1 end
      return (code % 2) * 32768 + days
    end
    if v < want then lo = mid + 1 else hi = mid - 1 end
  end
  return nil
end
local function register(key, suffix, client)
  local s = redis.call('GET', key)
  if not s then return {false, false, false, {}} end
  if not reg_hidden then
    reg_hidden = {}
    for _, id in ipairs(redis.call('SMEMBERS', reg_hidden_key)) do reg_hidden[tonumber(id)] = true end
  end
  local pos, len, first, stop = 1, #s, nil, nil
  while pos <= len do
    local size = reg_u32(s, pos + 4)
    if not reg_hidden[reg_u32(s, pos)] then first, stop = pos + 8, pos + 8 + size end
    pos = pos + 8 + size
  end
  local all, mine, listed, named = false, false, false, {}
  if not first then return {all, mine, listed, named} end
  pos = first
  while pos < stop do
    local scope_len = reg_u16(s, pos)
    local scope = string.sub(s, pos + 2, pos + 1 + scope_len)
    pos = pos + 2 + scope_len
    local day, n, fmt = reg_u16(s, pos), reg_u16(s, pos + 2), string.byte(s, pos + 4)
    local body = pos + 5
    if scope == '#directory' then
      local found = reg_find(s, body, n, fmt, suffix)
      if found then listed = day end
    elseif string.byte(scope, 1) == 64 then -- '@': a named register
      local found = reg_find(s, body, n, fmt, suffix)
      if found then
        named[#named + 1] = scope
        named[#named + 1] = day * 65536 + found
      end
    elseif scope == '*' or scope == client then
      local found = reg_find(s, body, n, fmt, suffix)
      if found then
        if scope == '*' then all = day * 65536 + found else mine = day * 65536 + found end
      end
    end
    if fmt == 0 then pos = body + 4 * n
    else pos = body + 83 + n + math.floor((n * string.byte(s, body + 2) + 7) / 8) end
  end
  return {all, mine, listed, named}
end
