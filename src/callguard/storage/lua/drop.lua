-- A failed load: removes its version ARGV[1] again.
local parts, found = {}, 0
for _, v in ipairs(reg_versions(s)) do
  if v[1] == tonumber(ARGV[1]) then found = 1 else parts[#parts + 1] = string.sub(s, v[2], v[3]) end
end
if found == 1 then
  if #parts == 0 then redis.call('DEL', KEYS[1]) else redis.call('SET', KEYS[1], table.concat(parts)) end
end
return found
