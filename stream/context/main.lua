-- Driver appended after common.lua and the entity's script: run every op in order, then write
-- back each entity touched by an applied (non-duplicate) op. Returns one binary string: per op a
-- status byte (0 applied, 1 duplicate) followed by the op's feature record.

local states, order, out = {}, {}, {}
for i = 1, #KEYS do
  local base = KEYS[i]
  local st = states[base]
  if not st then
    st = load_state(base)
    states[base] = st
    order[#order + 1] = st
  end
  local status, record = apply_op(st, ARGV[i + 1])
  out[2 * i - 1], out[2 * i] = STATUS[status], record
end
for i = 1, #order do
  if order[i].dirty then
    save_state(order[i])
  end
end
return tconcat(out)
