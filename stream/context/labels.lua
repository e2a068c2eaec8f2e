-- Record fraud labels against counterparties and terminals (see counterparty.lua, key :b).
-- KEYS[1]: the namespace marker of the call's hash slot (as in common.lua: nothing is written
-- when it is gone); KEYS[i] (i >= 2): entity base key; ARGV[1]: '<ddd' TTL ms, cap, marker TTL
-- ms; ARGV[i]: '<d' label time ms followed by the member: '<d' event time ms .. event id.
-- Returns per op 1 (recorded) or 0 (known).
--
-- The label's time is the score, so a reader at time t counts only labels known by then: a
-- label never leaks into context computed for an earlier moment, in live traffic or a replay
-- that delivers labels early. ZADD NX keeps the first label of an event (sticky).

local TTL_MS, CAP, MARKER_TTL_MS = struct.unpack('<ddd', ARGV[1])
local LABELS_FLAG_OFFSET = 8 * 12 -- byte offset of header double 13 (H_LABELS) of the :s blob
local ONE = struct.pack('<d', 1)
if redis.call('PEXPIRE', KEYS[1], MARKER_TTL_MS) == 0 then
  return redis.error_reply('LOST riskstream context marker ' .. KEYS[1] .. ' is missing: '
    .. 'Redis lost the namespace (restart without persistence, flush or eviction)')
end
local out = {}
for i = 2, #KEYS do
  local base = KEYS[i]
  local op = ARGV[i]
  local label_ms = struct.unpack('<d', op)
  local bkey = base .. ':b'
  local added = redis.call('ZADD', bkey, 'NX', label_ms, string.sub(op, 9))
  if added == 1 then
    local n = redis.call('ZCARD', bkey)
    if n > CAP then
      redis.call('ZREMRANGEBYRANK', bkey, 0, n - CAP - 1)
    end
    redis.call('PEXPIRE', bkey, TTL_MS)
    -- SETRANGE edits the blob in place and keeps its TTL
    if redis.call('EXISTS', base .. ':s') == 1 then
      redis.call('SETRANGE', base .. ':s', LABELS_FLAG_OFFSET, ONE)
    end
  end
  out[i - 1] = added
end
return out
