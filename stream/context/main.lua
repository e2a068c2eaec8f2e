-- Driver appended after common.lua and the entity's script: run every op in order, then write
-- back each entity touched by an applied (non-duplicate) op. Returns one binary string: per op a
-- status byte (0 applied, 1 duplicate) followed by the op's feature record.
--
-- Every entity is loaded before the first op runs (loading only reads), so a blob of another
-- layout version fails the call before anything is written (scripts are not rolled back).

local states, order, out = {}, {}, {}
for i = 1, #KEYS do
  local base = KEYS[i]
  if not states[base] then
    local st, err = load_state(base)
    if not st then
      return redis.error_reply(err)
    end
    states[base] = st
    order[#order + 1] = st
  end
end
for i = 1, #KEYS do
  local status, record = apply_op(states[KEYS[i]], ARGV[i + 1])
  out[2 * i - 1], out[2 * i] = STATUS[status], record
end
for i = 1, #order do
  if order[i].dirty then
    save_state(order[i])
  end
end
return tconcat(out)
