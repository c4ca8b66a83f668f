-- KEYS[1]: the writer lock; ARGV[1]: our token, ARGV[2]: the TTL in ms. Extends the lock only if it is still ours.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
