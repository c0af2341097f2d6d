-- write_if_not_older for the fields of one key (a cluster: its slot):
-- KEYS[1]; ARGV width, then field/value pairs. Answers {written, added}.
local width = tonumber(ARGV[1])
local written, added = 0, 0
for i = 2, #ARGV, 2 do
  local w, n = write_if_not_older(KEYS[1], ARGV[i], ARGV[i + 1], width)
  written, added = written + w, added + n
end
return {written, added}
