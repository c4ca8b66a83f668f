-- One call for many hashes' fields (a single server; a Cluster client pipelines HKEYS).
-- Callers pass at most _KEYS_PER_CALL keys, so that one call blocks the server briefly:
-- a bucket averages ~50 fields at 10 M IMEIs.
local out = {}
for i = 1, #KEYS do out[i] = redis.call('HKEYS', KEYS[i]) end
return out
