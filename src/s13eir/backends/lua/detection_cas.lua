-- Compare-and-set of one detection value (a device's state, a case). KEYS[1] the key;
-- ARGV[1] the value the caller read ("" when it read none), ARGV[2] the value to write,
-- ARGV[3] its time to live in ms (0: none). Writes only if the key still holds ARGV[1]:
-- a node that lost the race gets the current value back ({value}, "" when gone) and
-- applies its checks again on it; 1 when written.
local cur = redis.call('GET', KEYS[1]) or ''
if cur ~= ARGV[1] then return {cur} end
if ARGV[3] ~= '0' then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
else
  redis.call('SET', KEYS[1], ARGV[2])
end
return 1
