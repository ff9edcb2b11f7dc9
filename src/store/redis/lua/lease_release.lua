-- lease_release: KEYS[1] the lease hash; ARGV: holder. Ends the lease now if that holder has
-- it (its time is set to 0, so anyone may take it); returns 1 if it did, else 0.
if redis.call('HGET', KEYS[1], 'holder') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'expires_at', '0')
  return 1
end
return 0
