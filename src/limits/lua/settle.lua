-- tollgate limits: replace a reservation with the actual amounts (atomic: one script).
-- Lint.IfEdited(): paired with src/limits/redis.rs (`settle`).
-- KEYS[i]: counter hashes. ARGV[2i-1] = reserved amount to release, ARGV[2i] = actual use.
-- A counter whose window expired meanwhile is left alone (nothing to release or charge).
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    local r = redis.call('HINCRBY', KEYS[i], 'r', -tonumber(ARGV[2 * i - 1]))
    if r < 0 then
      redis.call('HSET', KEYS[i], 'r', 0)
    end
    redis.call('HINCRBY', KEYS[i], 'u', ARGV[2 * i])
  end
end
return 0
