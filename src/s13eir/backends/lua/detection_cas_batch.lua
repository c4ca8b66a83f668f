-- The compare-and-sets of one batch in one call (detection_cas.lua, once per value):
-- keys are built here from the IMEIs, so that redis-py packs one command, not one per
-- IMEI (not for Redis Cluster, where the keys of a script must share a slot). ARGV: [1]
-- the key prefix, [2] the time to live in ms (0: none), then per IMEI three values: the
-- IMEI, the value the caller read ("" for none), the value to write. The reply has, per
-- IMEI, 1 when written or the current value ("" when gone) when another writer won.
local prefix, ttl, out = ARGV[1], ARGV[2], {}
for i = 3, #ARGV, 3 do
  local key = prefix .. ARGV[i]
  local cur = redis.call('GET', key) or ''
  if cur ~= ARGV[i + 1] then
    out[#out + 1] = cur
  else
    if ttl ~= '0' then
      redis.call('SET', key, ARGV[i + 2], 'PX', ttl)
    else
      redis.call('SET', key, ARGV[i + 2])
    end
    out[#out + 1] = 1
  end
end
return out
