-- Appends a staged version. KEYS[1] the bucket; ARGV: the ids of its versions
-- as the merge read them ("3,7", "" when absent), the id of the version the
-- merge started from (kept), the new version. Answers 0 when the bucket
-- changed meanwhile (another load: the load stops).
local ids, base, want = {}, '', tonumber(ARGV[2])
for _, v in ipairs(reg_versions(s)) do
  ids[#ids + 1] = string.format('%d', v[1])
  if v[1] == want then base = string.sub(s, v[2], v[3]) end
end
if table.concat(ids, ',') ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], base .. ARGV[3])
return 1
