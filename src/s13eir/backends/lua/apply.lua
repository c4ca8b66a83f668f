-- KEYS: lock, current, seq, changes, feed (any key when no feed); then per change its
-- bucket, meta and info keys. ARGV: token, feed seq ('' = none), stream maxlen; then per
-- change 12 values (see _ARGS_PER_CHANGE in sync/writer.py). Validates everything before the first write
-- (a script is not rolled back on error). Returns {changes applied, last seq}.
local function split(s)
  local t = {}
  for x in string.gmatch(s, '[^,]+') do t[#t + 1] = tonumber(x) end
  return t
end
local function join(t)
  table.sort(t)
  local s = {}
  for i, v in ipairs(t) do s[i] = string.format('%d', v) end
  return table.concat(s, ',')
end
local function account(info, delta, h)
  redis.call('HINCRBY', info, 'count', delta)
  redis.call('HSET', info, 'checksum', xor128(redis.call('HGET', info, 'checksum') or EMPTY, h))
  if delta > 0 then redis.call('HINCRBY', info, 'adds', 1) end
end
local W = 12
if not fenced(KEYS[1], ARGV[1]) then return redis.error_reply('LOCKLOST writer lock not held') end
local n = (#ARGV - 3) / W
if ARGV[2] ~= '' then
  local done = redis.call('HGET', KEYS[5], 'seq')
  if done and tonumber(done) >= tonumber(ARGV[2]) then
    return {0, tonumber(redis.call('GET', KEYS[3]) or '0')}
  end
end
for i = 0, n - 1 do
  local a = 3 + i * W
  if redis.call('HGET', KEYS[2], ARGV[a + 2]) ~= ARGV[a + 7] then
    return redis.error_reply('GENCHANGED ' .. ARGV[a + 2] .. ' is no longer at generation ' .. ARGV[a + 7])
  end
end
local seq = tonumber(redis.call('GET', KEYS[3]) or '0')
for i = 0, n - 1 do
  local a = 3 + i * W
  local k = 5 + i * 3
  local op, lst, fld, mid, h, rm = ARGV[a + 1], ARGV[a + 2], ARGV[a + 8], ARGV[a + 9], ARGV[a + 11], ARGV[a + 12]
  local bk, mk, ik = KEYS[k + 1], KEYS[k + 2], KEYS[k + 3]
  seq = redis.call('INCR', KEYS[3])
  stream_add(KEYS[4], ARGV[3], seq, ARGV[a + 7], op, lst, ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], ARGV[a + 6])
  local old = redis.call('HGET', bk, fld)
  if op == 'add' then
    redis.call('HSETNX', mk, mid, ARGV[a + 10])
    if not old then
      redis.call('HSET', bk, fld, mid)
      account(ik, 1, h)
      redis.call('HDEL', ik, 'digest')
    elseif lst == 'exceptions' then
      if old ~= mid then
        redis.call('HSET', bk, fld, mid)
        redis.call('HDEL', ik, 'digest')
      end
    elseif not string.find(',' .. old .. ',', ',' .. mid .. ',', 1, true) then
      local ids = split(old)
      ids[#ids + 1] = tonumber(mid)
      redis.call('HSET', bk, fld, join(ids))
      redis.call('HDEL', ik, 'digest')
    end
  elseif old then
    local keep, all = {}, split(old)
    if rm ~= '*' then
      local drop = {}
      for x in string.gmatch(rm, '[^,]+') do drop[tonumber(x)] = true end
      for _, v in ipairs(all) do if not drop[v] then keep[#keep + 1] = v end end
    end
    if #keep == 0 then
      redis.call('HDEL', bk, fld)
      account(ik, -1, h)
      redis.call('HDEL', ik, 'digest')
    elseif #keep < #all then
      redis.call('HSET', bk, fld, join(keep))
      redis.call('HDEL', ik, 'digest')
    end
  end
end
if ARGV[2] ~= '' then redis.call('HSET', KEYS[5], 'seq', ARGV[2]) end
return {n, seq}
