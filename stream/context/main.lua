local STATUS = { [0] = schar(0), [1] = schar(1) }
-- Driver appended after common.lua and the entity's script: run every op in order, then write
-- back each entity touched by an applied (non-duplicate) op. Returns one binary string: per op a
-- status byte (0 applied, 1 duplicate) followed by the op's feature record.
--
-- KEYS[1] is the namespace marker of this call's hash slot (see check_marker): when it is gone,
-- Redis lost the namespace and the call fails having written nothing. Then every entity is
-- loaded before the first op runs (loading only reads), so a blob of another layout version
-- fails the call before anything is written (scripts are not rolled back).

local refused = check_marker()
if refused then
  return refused
end
local states, order, out = {}, {}, {}
for i = 2, #KEYS do
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
for i = 2, #KEYS do
  local status, record = apply_op(states[KEYS[i]], ARGV[i])
  out[2 * i - 3], out[2 * i - 2] = STATUS[status], record
end
for i = 1, #order do
  if order[i].dirty then
    save_state(order[i])
  end
end
return tconcat(out)
