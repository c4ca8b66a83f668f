-- The lookups of one batch in one call. Keys are built here from the IMEIs rather than
-- sent: redis-py spends microseconds of CPU per argument it packs, which would make the
-- node, not Redis, the limit of the Bloom-positive path. ARGV: [1] the IMEI bucket key
-- prefixes of the lists to ask, space-separated; [2] the exception bucket prefix or "";
-- [3] the 14-digit IMEIs back to back; [4] one IMSI (or "") per IMEI, each followed by
-- ",". Bucket and field are the IMEI's first 9 and last 5 digits as integers
-- (redis_layout: imei // BUCKET and imei % BUCKET); [5] the epoch key. The reply has the
-- store's epoch, then, per IMEI, one value per list and, when asked, one for the
-- exception pair ("" for none). The epoch tells a "not listed" from a store that lost
-- its data since the follower last looked (a restart without persistence).
local prefixes = {}
for w in string.gmatch(ARGV[1], '%S+') do prefixes[#prefixes + 1] = w end
local exc, imeis = ARGV[2], ARGV[3]
local out, k = {redis.call('GET', ARGV[5]) or ''}, 0
for imsi in string.gmatch(ARGV[4], '([^,]*),') do
  local bucket = tostring(tonumber(string.sub(imeis, k + 1, k + 9)))
  local field = tostring(tonumber(string.sub(imeis, k + 10, k + 14)))
  for i = 1, #prefixes do
    out[#out + 1] = redis.call('HGET', prefixes[i] .. bucket, field) or ''
  end
  if exc ~= '' and imsi ~= '' then
    out[#out + 1] = redis.call('HGET', exc .. bucket, field .. ':' .. imsi) or ''
  end
  k = k + 14
end
return out
