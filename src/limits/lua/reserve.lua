-- tollgate limits: reserve all counters of one request, or none (atomic: one script).
-- Lint.IfEdited(): paired with src/limits/redis.rs (`reserve`), which builds KEYS/ARGV and reads
-- the reply.
-- KEYS[1]: the reservation's marker; KEYS[i + 1]: counter hashes {u = used, r = reserved}.
-- ARGV[1] = marker ttl; ARGV[3i - 1] = limit, ARGV[3i] = amount, ARGV[3i + 1] = counter ttl.
-- Reply: {0, 0} reserved; {i, used + reserved} for the first counter that does not fit;
-- {-1, 0} when this reservation was settled (cancelled) before the script ran: a reserve that
-- timed out on the client and reached Redis late must not hold capacity nobody will release.
local n = #KEYS - 1
if not redis.call('SET', KEYS[1], 'held', 'NX', 'EX', ARGV[1]) then
  return {-1, 0}
end
for i = 1, n do
  local limit = tonumber(ARGV[3 * i - 1])
  local amount = tonumber(ARGV[3 * i])
  local v = redis.call('HMGET', KEYS[i + 1], 'u', 'r')
  local taken = (tonumber(v[1]) or 0) + (tonumber(v[2]) or 0)
  if taken + amount > limit then
    redis.call('DEL', KEYS[1])
    return {i, taken}
  end
end
for i = 1, n do
  redis.call('HINCRBY', KEYS[i + 1], 'r', ARGV[3 * i])
  if redis.call('TTL', KEYS[i + 1]) < 0 then
    redis.call('EXPIRE', KEYS[i + 1], ARGV[3 * i + 1])
  end
end
return {0, 0}
