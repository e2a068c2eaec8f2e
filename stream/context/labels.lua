-- Record fraud labels against counterparties and terminals (see counterparty.lua, key :b), and
-- name the customers whose cards passed through a point the labels confirm as compromised.
--
-- KEYS[1]: the namespace marker of the call's hash slot (as in common.lua: nothing is written
-- when it is gone); KEYS[i] (i >= 2): entity base key; ARGV[1]: '<ddddddd' TTL ms, labels cap,
-- marker TTL ms, compromise minimum frauds, compromise minimum fraud share, exposure look-back
-- before a fraud (ms), fan-out cap; ARGV[i]: '<d' label time ms followed by the member: '<d'
-- event time ms .. event id. Returns per op { recorded (1) or known (0), { customer, latest
-- time here, ... } }: the customers to mark as exposed (empty unless the entity counts as
-- compromised).
--
-- The label's time is the score, so a reader at time t counts only labels known by then: a
-- label never leaks into context computed for an earlier moment, in live traffic or a replay
-- that delivers labels early. ZADD NX keeps the first label of an event (sticky).
--
-- Common point of purchase: as of a label's time tl, the entity counts as a confirmed
-- compromised point when the fraud labels known by tl, of its events in the 30 days up to tl,
-- number at least MIN_FRAUDS and at least MIN_SHARE of its events in those days (a busy
-- terminal with one or two unrelated chargebacks does not qualify). Its customers whose latest
-- payment here lies in [te - BEFORE_MS, tl] (te: the labelled event's time) are returned, at
-- most FANOUT_CAP of them, for store.py to mark (exposure.lua). They are returned for a label
-- already known too, so a retry after a failure between the two calls completes the marking
-- (marking is idempotent).

local TTL_MS, CAP, MARKER_TTL_MS, MIN_FRAUDS, MIN_SHARE, BEFORE_MS, FANOUT_CAP =
  struct.unpack('<ddddddd', ARGV[1])
local LABELS_FLAG_OFFSET = 8 * 12 -- byte offset of header double 13 (H_LABELS) of the :s blob
local COUNTERPARTY_LAYOUT = 4 -- counterparty.lua's LAYOUT_VERSION
local MONTH_MS = 30 * 86400000
local ONE = struct.pack('<d', 1)
local NONE = {}
if redis.call('PEXPIRE', KEYS[1], MARKER_TTL_MS) == 0 then
  return redis.error_reply('LOST riskstream context marker ' .. KEYS[1] .. ' is missing: '
    .. 'Redis lost the namespace (restart without persistence, flush or eviction)')
end

-- Events of the entity in the 30 days up to its newest day (header: newest day's count plus
-- the 29 days before), or 0 when it has no state of this layout.
local function events_30d(skey)
  local raw = redis.call('GET', skey)
  if not raw then
    return 0
  end
  local version, _, _, _, _, today, _, c30 = struct.unpack('<dddddddd', raw)
  if version ~= COUNTERPARTY_LAYOUT then
    return 0
  end
  return today + c30
end

local function compromised(base, bkey, label_ms)
  local members = redis.call('ZRANGEBYSCORE', bkey, label_ms - MONTH_MS + 1, label_ms)
  local frauds = 0
  for j = 1, #members do
    if struct.unpack('<d', members[j]) > label_ms - MONTH_MS then
      frauds = frauds + 1
    end
  end
  if frauds < MIN_FRAUDS then
    return false
  end
  return frauds >= MIN_SHARE * events_30d(base .. ':s')
end

local out = {}
for i = 2, #KEYS do
  local base = KEYS[i]
  local op = ARGV[i]
  local label_ms, event_ms = struct.unpack('<dd', op)
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
  local exposed = NONE
  if compromised(base, bkey, label_ms) then
    exposed = redis.call('ZRANGEBYSCORE', base .. ':u', event_ms - BEFORE_MS, label_ms,
      'WITHSCORES', 'LIMIT', 0, FANOUT_CAP)
  end
  out[i - 1] = { added, exposed }
end
return out
