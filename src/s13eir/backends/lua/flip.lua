-- KEYS: lock, current, previous, seq, changes, info of the generation made current.
-- ARGV: token, list, new current, new previous ('' = none), expected current ('' = none),
-- stream maxlen ('0' = untrimmed). Returns the seq of the generation record.
if not fenced(KEYS[1], ARGV[1]) then return redis.error_reply('LOCKLOST writer lock not held') end
local cur = redis.call('HGET', KEYS[2], ARGV[2]) or ''
if cur ~= ARGV[5] then
  return redis.error_reply('CURCHANGED ' .. ARGV[2] .. ' is at generation ' .. cur .. ', expected ' .. ARGV[5])
end
local seq = redis.call('INCR', KEYS[4])
redis.call('HSET', KEYS[6], 'state', 'ready', 'seq', seq)
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[3], ARGV[2], ARGV[4]) else redis.call('HDEL', KEYS[3], ARGV[2]) end
stream_add(KEYS[5], ARGV[6], seq, ARGV[3], 'generation', ARGV[2], '', '', '', '')
return seq
