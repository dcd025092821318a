-- tollgate limits: reserve all counters of one request, or none (atomic: one script).
-- Lint.IfEdited(): paired with src/limits/redis.rs (`reserve`), which reads the reply.
-- KEYS[i]: counter hashes {u = used, r = reserved}.
-- ARGV[3i-2] = limit, ARGV[3i-1] = amount to reserve, ARGV[3i] = ttl in seconds.
-- Reply: {0, 0} when reserved; {i, used + reserved} for the first counter that does not fit.
local n = #KEYS
for i = 1, n do
  local limit = tonumber(ARGV[3 * i - 2])
  local amount = tonumber(ARGV[3 * i - 1])
  local v = redis.call('HMGET', KEYS[i], 'u', 'r')
  local taken = (tonumber(v[1]) or 0) + (tonumber(v[2]) or 0)
  if taken + amount > limit then
    return {i, taken}
  end
end
for i = 1, n do
  redis.call('HINCRBY', KEYS[i], 'r', ARGV[3 * i - 1])
  if redis.call('TTL', KEYS[i]) < 0 then
    redis.call('EXPIRE', KEYS[i], ARGV[3 * i])
  end
end
return {0, 0}
