-- Delete a detection value (a closed case) only if it is still the one read. KEYS[1] the
-- key; ARGV[1] the value read. 1 when deleted, 0 when it changed meanwhile (a finding
-- reopened the case) or is gone.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
