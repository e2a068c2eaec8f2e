-- Customer context: apply each event and return the customer's features as of the event's time
-- (the event included). Appended to common.lua by store.py; the record order is
-- CUSTOMER_RECORD in features.py.
--
-- Keys under the base "<ns>:{c:<customer_id>}":
--   :s  state blob: header | recent-event log | recent outbound | story | dedupe FIFO
--   :d  string: ring of past days' totals (7d/30d windows; read and written about once per
--       active day, see common.lua)
--   :k  hash of first-seen times: 'p'..counterparty, 'd'..device, 'k'..country -> packed double
--   :z  zset 'p'..inbound sender -> its latest inbound time (distinct senders over 7 days)
--   :x  zset of payments at points later confirmed compromised: member = packed payment time
--       .. entity tag, score = confirmation time (written by exposure.lua, read here)

-- header (doubles): 1 layout version, then
-- 2: ':d' is a string ring; 3 (two branches): keyed hashes (ops.py, hash_key) / exposure to
-- compromised points (':x', slot 43) and the story; 4: both, and the namespace marker as KEYS[1]
local LAYOUT_VERSION = 4
local H_FIRST, H_NEWEST, H_N = 2, 3, 4
local H_OUT, H_IN = 5, 9              -- per direction: n, mean ln(1+x), M2, sum (4 values each)
local H_DROP_PREV, H_DROP_IN = 13, 14 -- newest times among events pruned from the log
local H_LAST_IN = 15                  -- newest inbound time
-- 16 newest day, 17..22 its totals, 23..28 totals of the 6 days before, 29..34 of the 29 before
-- a past day's totals in the ':d' ring (slot: stamp, then out count, out sum, in count, in sum,
-- near-threshold cash deposits, cash-in sum; sums in cents as 6-byte integers: exact to $1.4
-- trillion a day, where a day's total saturates; counts saturate at 65,535)
local function customer_ring(st)
  if not st.ring_loaded then
    st.ring = rcall('GET', st.dkey) or nil
    st.ring_loaded = true
  end
  return st.ring, 0
end
local H_D_TTL = 39 -- 1 once the ':d' key was created (with its TTL) by customer_ring_put
local RING_BYTES = 32 * 28 -- DAYS.ring_days slots
-- A slot is written in place with SETRANGE, which keeps the key's TTL. The key is created
-- whole (SET of all RING_BYTES with PX), never grown by SETRANGE: Redis grows a string
-- greedily, up to twice what it holds. SETRANGE returns the length: anything but RING_BYTES
-- means the key had expired (35 days after its last refresh; a refresh is then due too).
local function customer_ring_put(st, off, bytes)
  local h = st.hdr
  if h[H_D_TTL] == 1 and rcall('SETRANGE', st.dkey, off, bytes) == RING_BYTES then
    st.ring_loaded = false -- a whole ring read earlier in this call is stale now
    return
  end
  local ring = srep(schar(0), off) .. bytes .. srep(schar(0), RING_BYTES - off - 28)
  if h[H_D_TTL] == 1 then
    rcall('SET', st.dkey, ring, 'PX', TTL_MS) -- over the fragment the SETRANGE created
  elseif not rcall('SET', st.dkey, ring, 'PX', TTL_MS, 'NX') then
    rcall('SETRANGE', st.dkey, off, bytes) -- a ring written before the flag existed
    rcall('PEXPIRE', st.dkey, TTL_MS)
  end
  h[H_D_TTL] = 1
  st.ring_loaded = false
end
local I6_MAX = 2 ^ 47 - 1
local DAYS = {
  day = 16, today = 17, c7 = 23, c30 = 29, nv = 6, slot_fmt = '<IHi6Hi6Hi6', slot = 28,
  ring_days = 32, keep_days = 31,
  max = { 65535, I6_MAX, 65535, I6_MAX, 65535, I6_MAX },
  -- (add_to_day saturates every total at its field; the mmin here is a second guard)
  pack = function(stamp, v, i)
    return spack('<IHi6Hi6Hi6', stamp, mmin(v[i], 65535), v[i + 1], mmin(v[i + 2], 65535),
      v[i + 3], mmin(v[i + 4], 65535), v[i + 5])
  end,
  ring = customer_ring, put = customer_ring_put,
}
local H_NP, H_ND, H_NZ = 35, 36, 37   -- first-seen counterparties, devices; sender zset size
local H_LOGN, H_RON, H_FIFON = 38, 40, 41
local H_TTL_AT = 42                   -- wall clock of the last TTL refresh
local H_EXPOSED = 43 -- 1 once ':x' holds a mark (set by exposure.lua), so most skip the lookup
local H_STORYN = 44 -- story entries
local N_HDR = 44
local HDR_FMT = rep_fmt('d', N_HDR)

-- day values: out count, out sum, in count, in sum, near-threshold cash deposits, cash-in sum
local V_OUT_N, V_OUT_S, V_IN_N, V_IN_S, V_NEAR, V_CASH = 1, 2, 3, 4, 5, 6

local RO_UNIT, RW, RO_CAP = 'ddI', 3, 16 -- recent outbound transfers: time, cents, cp hash

-- Money: amounts arrive as whole US cents and every sum stays in cents. Doubles add integers
-- exactly (up to 2^53), so a sum does not depend on the order of additions and subtractions -
-- a window slid event by event equals one summed afresh, whatever the batch boundaries were -
-- and a replay reproduces live context to the bit. Records report dollars (cents / 100).
local N_REC = 41
local REC_FMT = rep_fmt('f', N_REC)

-- The story: the customer's last STORY_K events by event time (ties in arrival order), kept as
-- a string of fixed-size entries, oldest first: time (whole seconds), amount (log2(1 + USD) in
-- 1/2048 steps), z-score against the usual (quarters), the event's kind byte from ops.py
-- (channel, direction, counterparty type, high-risk country), novelty bits (counterparty,
-- device, country new; late) and the counterparty hash. Each event is returned with the entries
-- before it (a count byte, then the entries, zero-padded to STORY_K): what the narrative tells
-- and the story features are computed from, in Python. They are part of the record the dedupe
-- memory keeps, so a redelivered event gets the same story back.
local STORY_UNIT, STORY_W = '<IHbBBI', 13
local STORY_BYTES = 1 + STORY_K * STORY_W
local FIFO_W = 16 + 4 * N_REC + STORY_BYTES


local SD_FLOOR = 0.25        -- ln units: a customer paying the same amount has std ~0
local Z_LIMIT = 50
local ROUND_TRIP_TOLERANCE = 0.05

-- The entity's state; nil and an error message if its blob has another layout version.
local function load_state(base)
  local st = {
    skey = base .. ':s', kkey = base .. ':k', zkey = base .. ':z', dkey = base .. ':d',
    xkey = base .. ':x',
    dirty = false, rolled = false, created = false, z_created = false,
  }
  local raw = rcall('GET', st.skey)
  if not raw then
    st.created = true
    local h = zeros(N_HDR)
    h[1] = LAYOUT_VERSION
    h[H_DROP_PREV], h[H_DROP_IN], h[H_LAST_IN], h[DAYS.day] = -1, -1, -1, -1
    -- marks may precede the blob (a replay that applied labels first, an expired blob)
    h[H_EXPOSED] = rcall('EXISTS', st.xkey)
    st.hdr, st.log, st.log_first, st.ro, st.story = h, {}, 1, {}, ''
    fifo_load(st, '', 1, 0, FIFO_W, 0)
    return st
  end
  local version = sunpack('<d', raw) -- first: an older header may be shorter
  if version ~= LAYOUT_VERSION then
    return nil, layout_error(st.skey, version, LAYOUT_VERSION)
  end
  local h, pos = unpack_at(HDR_FMT, raw, 1)
  st.hdr = h
  local n = h[H_LOGN]
  if n > 0 then
    st.log, pos = unpack_at(rep_fmt(LOG_UNIT, n), raw, pos)
  else
    st.log = {}
  end
  st.log_first = 1
  n = h[H_RON]
  if n > 0 then
    st.ro, pos = unpack_at(rep_fmt(RO_UNIT, n), raw, pos)
  else
    st.ro = {}
  end
  local story_end = pos + h[H_STORYN] * STORY_W
  st.story = ssub(raw, pos, story_end - 1)
  fifo_load(st, raw, story_end, h[H_FIFON], FIFO_W, h[H_NEWEST])
  return st
end

local function save_state(st)
  local h = st.hdr
  local newest = h[H_NEWEST]
  refresh_due(st, h, H_TTL_AT)
  fifo_prune(st)
  -- recent outbound transfers older than the round-trip window (and a day) are useless
  local ro = st.ro
  local ro_first = 1
  while ro_first <= #ro and ro[ro_first] <= newest - MONTH_MS - DAY_MS do
    ro_first = ro_first + RW
  end
  ro_first = (ro_first - 1) / RW + 1
  local log_n = #st.log / LW - st.log_first + 1
  h[H_LOGN], h[H_RON], h[H_FIFON] = log_n, #ro / RW - ro_first + 1, st.fifo_n
  h[H_STORYN] = #st.story / STORY_W
  local ttl1, ttl2 = ttl_args(st, h, H_TTL_AT)
  local blob = tconcat(fifo_encode(st, {
    spack(HDR_FMT, unpack(h)),
    pack_records(LOG_UNIT, st.log, LW, st.log_first),
    pack_records(RO_UNIT, ro, RW, ro_first),
    st.story,
  }))
  if ttl2 then
    rcall('SET', st.skey, blob, ttl1, ttl2)
  else
    rcall('SET', st.skey, blob, ttl1)
  end
  -- :k is only ever created with the entity, or after expiring (a refresh is then due).
  if st.refresh then
    rcall('PEXPIRE', st.kkey, TTL_MS)
  end
  if st.refresh or st.z_created then
    rcall('PEXPIRE', st.zkey, TTL_MS)
  end
  if st.refresh then
    rcall('PEXPIRE', st.dkey, TTL_MS)
  end
end

-- Evict first-seen entries of one kind ('p' or 'd') down to `cap` (HSCAN order: arbitrary).
local function evict_seen(st, prefix, count, cap)
  if count <= cap then
    return count
  end
  local want = count - cap + math.ceil(cap / 8)
  local victims = {}
  local cursor = '0'
  repeat
    local page = rcall('HSCAN', st.kkey, cursor, 'MATCH', prefix .. '*', 'COUNT', 2 * want)
    cursor = page[1]
    local kv = page[2]
    for i = 1, #kv, 2 do
      if #victims < want then
        victims[#victims + 1] = kv[i]
      end
    end
  until cursor == '0' or #victims >= want
  if #victims == 0 then
    return count
  end
  return count - rcall('HDEL', st.kkey, unpack(victims))
end

-- Is the first-seen time `packed` (or nil) known and not after t? (Out of order, a "first seen"
-- later than t means this event is the first by event time.)
local function seen_by(packed, t)
  return packed and sunpack('<d', packed) <= t
end

-- First-seen lookups of the counterparty, country and device (one HMGET); records what is new.
-- Returns the flags (with F_CP_NEW when the counterparty is new) and the first-seen features.
local function first_seen(st, h, t, flags, devh, pfield, kfield, dfield)
  local got
  if devh ~= 0 then
    got = rcall('HMGET', st.kkey, pfield, kfield, dfield)
  else
    got = rcall('HMGET', st.kkey, pfield, kfield)
  end
  local writes = nil
  local cp_new, known_days, country_new, device_new = 1, 0, 1, 0
  if seen_by(got[1], t) then
    cp_new, known_days = 0, (t - sunpack('<d', got[1])) / DAY_MS
  else
    writes = { pfield, spack('<d', t) }
    if not got[1] then
      h[H_NP] = h[H_NP] + 1
    end
    flags = flags + F_CP_NEW
  end
  if seen_by(got[2], t) then
    country_new = 0
  else
    writes = writes or {}
    writes[#writes + 1] = kfield
    writes[#writes + 1] = spack('<d', t)
  end
  if devh ~= 0 and not seen_by(got[3], t) then
    device_new = 1
    if not got[3] then
      h[H_ND] = h[H_ND] + 1
    end
    writes = writes or {}
    writes[#writes + 1] = dfield
    writes[#writes + 1] = spack('<d', t)
  end
  if writes then
    rcall('HSET', st.kkey, unpack(writes))
    h[H_NP] = evict_seen(st, 'p', h[H_NP], SEEN_CAP)
    h[H_ND] = evict_seen(st, 'd', h[H_ND], DEVICE_CAP)
  end
  return flags, cp_new, known_days, country_new, device_new
end

-- Put the record into the log (sorted by time; an equal time goes after what arrived before
-- it) and compute the 1h/24h windows: slid for an on-time event, scanned for an out-of-order
-- one. Returns the window state and the previous event's and previous inbound's times.
local function record_in_log(st, h, rec, on_time, first_event, newest_before)
  local t = rec[1]
  local log = st.log
  local lo_index = (st.log_first - 1) * LW + 1
  local at = #log + 1 -- index of the new record's first value
  if on_time then
    if not st.win then
      st.win = win_scan(log, lo_index, t)
    end
    for j = 1, LW do
      log[at + j - 1] = rec[j]
    end
    win_slide(st.win, log, t, at)
    -- the newest times so far are the previous ones
    return st.win, first_event and -1 or newest_before, h[H_LAST_IN]
  end
  st.win = nil
  while at > lo_index and log[at - LW] > t do
    at = at - LW
  end
  for j = LW, 1, -1 do
    tinsert(log, at, rec[j])
  end
  local prev, prev_in = scan_previous(log, lo_index, t, at)
  -- older events may have left the log: the newest of those pruned still count
  if h[H_DROP_PREV] <= t and h[H_DROP_PREV] > prev then
    prev = h[H_DROP_PREV]
  end
  if h[H_DROP_IN] <= t and h[H_DROP_IN] > prev_in then
    prev_in = h[H_DROP_IN]
  end
  return win_scan(log, lo_index, t), prev, prev_in
end

-- Forget log records no on-time event can need: older than newest - (24h + tolerance), or
-- beyond the cap (the newest pruned times stay in the header). A record still inside the
-- sliding windows (only possible through the cap) leaves them too, so windows always cover
-- exactly the records in the log.
local function prune_log(st, h)
  local log, first = st.log, st.log_first
  local horizon = h[H_NEWEST] - DAY_MS - TOL_MS
  local count = #log / LW - first + 1
  local k = (first - 1) * LW + 1
  local sw = st.win
  while count > 0 and (log[k] <= horizon or count > LOG_CAP) do
    if log[k] > h[H_DROP_PREV] then
      h[H_DROP_PREV] = log[k]
    end
    if band(log[k + 2], F_OUT) == 0 and log[k] > h[H_DROP_IN] then
      h[H_DROP_IN] = log[k]
    end
    if sw then
      win_drop(sw, log, k)
    end
    first, count, k = first + 1, count - 1, k + LW
  end
  if first > 64 then -- compact now and then, so the dead prefix stays small
    st.log = { unpack(log, k, #log) }
    first = 1
    if sw then
      win_rebase(sw, k - 1)
    end
  end
  st.log_first = first
end

-- 7-day and 30-day totals (day-granular) including this event.
local function day_windows(st, h, t, amt, flags, outbound) -- amt in cents
  local near = band(flags, F_NEAR) ~= 0 and 1 or 0
  local cash = band(flags, F_CASH_IN) ~= 0 and amt or 0
  local vals
  if outbound then
    vals = { 1, amt, 0, 0, near, cash }
  else
    vals = { 0, 0, 1, amt, near, cash }
  end
  local w7, w30 = add_to_day(st, DAYS, floor(t / DAY_MS), vals)
  if st.rolled then
    -- once per active day: senders older than any on-time window leave a big zset
    st.rolled = false
    if h[H_NZ] > PRUNE_AT then
      h[H_NZ] = h[H_NZ]
        - rcall('ZREMRANGEBYSCORE', st.zkey, '-inf', h[H_NEWEST] - WEEK_MS - TOL_MS - 1)
    end
  end
  return w7, w30
end

-- Distinct inbound senders over the 7 days up to t (fan-in); records an inbound's sender.
local function inbound_senders(st, h, t, outbound, pfield)
  if not outbound then
    if h[H_NZ] == 0 then
      st.z_created = true
    end
    h[H_NZ] = cap_zset(st.zkey, h[H_NZ] + rcall('ZADD', st.zkey, 'GT', t, pfield))
  end
  if h[H_NZ] > 0 then
    return rcall('ZCOUNT', st.zkey, t - WEEK_MS + 1, '+inf')
  end
  return 0
end

-- The amount against this customer's usual in the same direction (Welford on ln(1 + amount)),
-- then the baseline updated with it. Returns z-score, ratio to the mean, earlier count.
local function baseline(h, outbound, amt) -- amt in cents
  local b = outbound and H_OUT or H_IN
  local n, mean, m2, sum = h[b], h[b + 1], h[b + 2], h[b + 3]
  local x = mlog(1 + amt / 100)
  local z, ratio = 0, 1
  if n >= 2 then
    z = mmax(-Z_LIMIT, mmin(Z_LIMIT, (x - mean) / mmax(SD_FLOOR, msqrt(m2 / (n - 1)))))
  end
  if n >= 1 and sum > 0 then
    ratio = amt / (sum / n)
  end
  local delta = x - mean
  local mean1 = mean + delta / (n + 1)
  h[b], h[b + 1], h[b + 2], h[b + 3] = n + 1, mean1, m2 + delta * (x - mean1), sum + amt
  return z, ratio, n
end

-- Round trip: an inbound transfer close to an outbound transfer sent in the last 30 days to
-- someone else (a refund from the same counterparty is not a round trip). Outbound transfers
-- are remembered (the last RO_CAP). Returns match (0/1) and days since that outbound (-1).
local function round_trip(st, t, amt, flags, cph, outbound)
  if band(flags, F_TRANSFER) == 0 then
    return 0, -1
  end
  local ro = st.ro
  if outbound then
    local m = #ro
    ro[m + 1], ro[m + 2], ro[m + 3] = t, amt, cph
    if m >= RO_CAP * RW then
      st.ro = { unpack(ro, RW + 1, m + RW) }
    end
    return 0, -1
  end
  local best = -1
  for k = 1, #ro, RW do
    local rt = ro[k]
    if rt <= t and rt > t - MONTH_MS and ro[k + 2] ~= cph and rt > best
      and mabs(amt - ro[k + 1]) <= ROUND_TRIP_TOLERANCE * ro[k + 1] then
      best = rt
    end
  end
  if best >= 0 then
    return 1, (t - best) / DAY_MS
  end
  return 0, -1
end

-- Card passed through a compromised point: among the marks confirmed by t (exposure.lua), the
-- distinct points this customer paid at within EXPOSURE_WINDOW_MS before t, and the days since
-- the latest such payment (-1: none).
local function exposure(st, h, t)
  if h[H_EXPOSED] == 0 then
    return 0, -1
  end
  local marks = rcall('ZRANGEBYSCORE', st.xkey, '-inf', t)
  local points, n, latest = {}, 0, -1
  for i = 1, #marks do
    local visit = sunpack('<d', marks[i])
    if visit <= t and visit > t - EXPOSURE_WINDOW_MS then
      local point = ssub(marks[i], 9)
      if not points[point] then
        points[point] = true
        n = n + 1
      end
      if visit > latest then
        latest = visit
      end
    end
  end
  if latest < 0 then
    return 0, -1
  end
  return n, (t - latest) / DAY_MS
end

-- The story before an event at t (whole seconds) - the remembered events older than it, and
-- those as old that arrived before it - as returned bytes; then the event itself is remembered
-- (the oldest entry goes beyond STORY_K; an event older than everything remembered in a full
-- story is not: it was never among the customer's last STORY_K).
local function story(st, t_s, entry)
  local s = st.story
  local n = #s / STORY_W
  local p = n
  while p > 0 and sunpack('<I', s, (p - 1) * STORY_W + 1) > t_s do
    p = p - 1
  end
  local before = ssub(s, 1, p * STORY_W)
  if p > 0 or n < STORY_K then
    s = before .. entry .. ssub(s, p * STORY_W + 1)
    if n + 1 > STORY_K then
      s = ssub(s, STORY_W + 1)
    end
    st.story = s
  end
  return schar(p) .. before .. srep(schar(0), (STORY_K - p) * STORY_W)
end

local function apply_op(st, op)
  -- amt: whole US cents
  local t, amt, flags, cph, devh, cc, kind, idh, pfield, kfield, dfield =
    sunpack('<ddHIIHBc8Hc0Hc0Hc0', op)
  local snapshot = fifo_find(st, idh)
  if snapshot then
    return 1, snapshot
  end
  st.dirty = true
  local h = st.hdr
  local first_event = h[H_N] == 0
  local newest_before = h[H_NEWEST]
  local late = (not first_event) and t < newest_before - TOL_MS
  local outbound = band(flags, F_OUT) ~= 0

  local cp_new, known_days, country_new, device_new
  flags, cp_new, known_days, country_new, device_new =
    first_seen(st, h, t, flags, devh, pfield, kfield, dfield)
  local w, prev, prev_in = record_in_log(st, h, { t, amt, flags, cph, devh, cc, idh },
    first_event or t >= newest_before, first_event, newest_before)

  -- profile
  if first_event or t < h[H_FIRST] then
    h[H_FIRST] = t
  end
  if t > newest_before then
    h[H_NEWEST] = t
  end
  h[H_N] = h[H_N] + 1
  if not outbound and t > h[H_LAST_IN] then
    h[H_LAST_IN] = t
  end

  local w7, w30 = day_windows(st, h, t, amt, flags, outbound)
  local senders = inbound_senders(st, h, t, outbound, pfield)
  local z, ratio, n = baseline(h, outbound, amt)
  local rt_match, rt_days = round_trip(st, t, amt, flags, cph, outbound)
  local exposed_points, exposed_days = exposure(st, h, t)
  local novelty = cp_new + 2 * device_new + 4 * country_new + (late and 8 or 0)
  local told = story(st, floor(t / 1000), spack(STORY_UNIT, floor(t / 1000),
    mmin(65535, floor(mlog(1 + amt / 100) / mlog(2) * 2048 + 0.5)),
    mmax(-127, mmin(127, floor(z * 4 + 0.5))), kind, novelty, cph))

  local since_prev, since_in = -1, -1
  if prev >= 0 then
    since_prev = (t - prev) / 1000
  end
  if prev_in >= 0 then
    since_in = (t - prev_in) / 1000
  end
  local oc1, os1, oc24, os24, ic24, is24, ncps1, ncps24, nccs, ndevs, newcp24, small1, ecom1,
    risky1, out_in = win_figures(w)
  local record = spack(REC_FMT,
    oc1, os1, oc24, os24, ic24, is24,
    w7[V_OUT_N], w7[V_OUT_S] / 100, w7[V_IN_N], w7[V_IN_S] / 100,
    w30[V_OUT_N], w30[V_OUT_S] / 100, w30[V_IN_N], w30[V_IN_S] / 100,
    ncps1, ncps24, nccs, ndevs,
    cp_new, known_days, newcp24, device_new, country_new,
    z, ratio, n,
    since_prev, (t - h[H_FIRST]) / DAY_MS,
    small1, ecom1, risky1,
    w7[V_NEAR], w7[V_CASH] / 100, senders,
    since_in, out_in, rt_match, rt_days,
    late and 1 or 0,
    exposed_points, exposed_days) .. told
  fifo_push(st, idh, h[H_NEWEST], record)
  prune_log(st, h)
  return 0, record
end
