-- tollgate limits: replace a reservation with the actual amounts (atomic, idempotent).
-- Lint.IfEdited(): paired with src/limits/redis.rs (`settle`).
-- KEYS[1]: the reservation's marker; KEYS[i + 1]: counter hashes.
-- ARGV[1] = marker ttl; ARGV[2i] = reserved amount to release, ARGV[2i + 1] = actual use.
-- The marker makes it safe to retry a settlement whose reply was lost (applied once), and to
-- cancel a reservation whose reserve timed out (if the reserve never ran, it never will).
local state = redis.call('GET', KEYS[1])
if state == 'done' or state == 'void' then
  return 0
end
if not state then
  redis.call('SET', KEYS[1], 'void', 'EX', ARGV[1])
  return 0
end
for i = 1, #KEYS - 1 do
  local key = KEYS[i + 1]
  if redis.call('EXISTS', key) == 1 then
    local r = redis.call('HINCRBY', key, 'r', -tonumber(ARGV[2 * i]))
    if r < 0 then
      redis.call('HSET', key, 'r', 0)
    end
    redis.call('HINCRBY', key, 'u', ARGV[2 * i + 1])
  end
end
redis.call('SET', KEYS[1], 'done', 'EX', ARGV[1])
return 1
