-- After the commit: drops the versions before version ARGV[1] (superseded).
for _, v in ipairs(reg_versions(s)) do
  if v[1] == tonumber(ARGV[1]) then
    if v[2] > 1 then redis.call('SET', KEYS[1], string.sub(s, v[2])) end
    return 1
  end
end
return 0
