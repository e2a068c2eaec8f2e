-- Mark customers whose card paid at a point labels.lua found compromised (key :x under the
-- customer's base), for customer.lua's "card passed through a compromised point" features.
--
-- KEYS[1]: the namespace marker of the call's hash slot (as in common.lua: nothing is written
-- when it is gone); KEYS[i] (i >= 2): customer base key; ARGV[1]: '<ddd' TTL ms, cap, marker
-- TTL ms; ARGV[i]: '<d' confirmation time ms (the label time that made the point compromised)
-- .. member ('<d' time of the customer's payment there .. entity tag). Returns the number of
-- new marks.
--
-- The confirmation time is the score, so an event at t sees only points confirmed by t (never
-- the future). ZADD LT keeps the earliest confirmation of a payment (idempotent: a repeated or
-- retried mark changes nothing). Beyond the cap, the earliest-confirmed marks go.

local TTL_MS, CAP, MARKER_TTL_MS = struct.unpack('<ddd', ARGV[1])
local EXPOSED_FLAG_OFFSET = 8 * 42 -- byte offset of header double 43 (H_EXPOSED) of the :s blob
local CUSTOMER_LAYOUT = 4 -- customer.lua's LAYOUT_VERSION
local ONE = struct.pack('<d', 1)
if redis.call('PEXPIRE', KEYS[1], MARKER_TTL_MS) == 0 then
  return redis.error_reply('LOST riskstream context marker ' .. KEYS[1] .. ' is missing: '
    .. 'Redis lost the namespace (restart without persistence, flush or eviction)')
end

local added = 0
for i = 2, #KEYS do
  local base = KEYS[i]
  local op = ARGV[i]
  local xkey = base .. ':x'
  local new = redis.call('ZADD', xkey, 'LT', struct.unpack('<d', op), string.sub(op, 9))
  if new == 1 then
    added = added + 1
    local n = redis.call('ZCARD', xkey)
    if n > CAP then
      redis.call('ZREMRANGEBYRANK', xkey, 0, n - CAP - 1)
    end
  end
  redis.call('PEXPIRE', xkey, TTL_MS)
  -- flag the customer's blob (in place, keeping its TTL) so its events look the marks up; a
  -- blob of another layout is left alone (customer.lua refuses it anyway)
  local skey = base .. ':s'
  local head = redis.call('GETRANGE', skey, 0, 7)
  if #head == 8 and struct.unpack('<d', head) == CUSTOMER_LAYOUT then
    redis.call('SETRANGE', skey, EXPOSED_FLAG_OFFSET, ONE)
  end
end
return added
