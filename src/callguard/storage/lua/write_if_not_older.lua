-- write_if_not_older for a chunk of (key, field, value), atomically. KEYS[1]
-- the hash that tallies new fields, then one key per triple. ARGV: width, the
-- tally's field ('' none), then field/value pairs, one per triple. Answers
-- how many were written.
local width, tally = tonumber(ARGV[1]), ARGV[2]
local written, added = 0, 0
for i = 2, #KEYS do
  local w, n = write_if_not_older(KEYS[i], ARGV[2 * i - 1], ARGV[2 * i], width)
  written, added = written + w, added + n
end
if tally ~= '' and added > 0 then redis.call('HINCRBY', KEYS[1], tally, added) end
return written
