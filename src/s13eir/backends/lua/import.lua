-- Standalone write path, one call per batch. KEYS: the batch's distinct hashes; ARGV[1]:
-- 'ids' to merge meta ids into an existing field, 'single' to keep the first (exception
-- pairs carry one id); ARGV[2]: the rows as "<key index>,<field>,<meta id>;" (fields and
-- ids never hold ',' or ';'). One string instead of three arguments per row: redis-py
-- packs arguments in Python at ~1.5 us each, which was a third of an import.
-- Returns one character per row: '1' new field, '2' existing field that gained the id,
-- '0' nothing new.
local merge = ARGV[1] == 'ids'
local out = {}
for ki, f, id in string.gmatch(ARGV[2], '(%d+),([^,;]+),(%d+);') do
  local key = KEYS[tonumber(ki)]
  local flag = '0'
  if redis.call('HSETNX', key, f, id) == 1 then
    flag = '1'
  elseif merge then
    local old = redis.call('HGET', key, f)
    if not string.find(',' .. old .. ',', ',' .. id .. ',', 1, true) then
      local ids = {}
      for x in string.gmatch(old, '[^,]+') do ids[#ids + 1] = tonumber(x) end
      ids[#ids + 1] = tonumber(id)
      table.sort(ids)
      for j = 1, #ids do ids[j] = string.format('%d', ids[j]) end
      redis.call('HSET', key, f, table.concat(ids, ','))
      flag = '2'
    end
  end
  out[#out + 1] = flag
end
return table.concat(out)
