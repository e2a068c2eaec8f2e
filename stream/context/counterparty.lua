-- Counterparty entity context - a card terminal, merchant, beneficiary or originator account,
-- ATM, branch or exchange: activity, distinct customers and label-derived fraud risk as of the
-- event's time.
-- Appended to common.lua by store.py; the record order is COUNTERPARTY_RECORD in features.py.
--
-- Keys under the base "<ns>:{p:<counterparty_id>}" or "<ns>:{t:<terminal_id>}":
--   :s  state blob: header | hour list | past-day ring (7d/30d windows) | dedupe FIFO with
--       snapshots
--   :u  zset customer -> latest event time with this counterparty
--   :b  zset of fraud labels: member = packed event time .. event id, score = label time
--       (written by labels.lua, read here)

-- header (doubles): 1 layout version, then
-- 2: the day ring rides in the blob; 3 (two branches): keyed event-id hashes / 64-day ring and
-- mature-window caches (label maturity); 4: both, and the namespace marker as KEYS[1]
local LAYOUT_VERSION = 4
local H_FIRST, H_NEWEST, H_N = 2, 3, 4
-- newest day, its count, counts of the 6 and of the 29 days before
-- (past days: ring slots of stamp and count, kept in the blob once written). The ring keeps
-- 62 days: the mature 30-day window of an event ends MATURITY_DAYS (at most 30) before it.
local RING_SLOTS = 64
local RING_BYTES = RING_SLOTS * 8
local DAYS = {
  day = 5, today = 6, c7 = 7, c30 = 8, nv = 1, slot_fmt = '<II', slot = 8,
  ring_days = RING_SLOTS, keep_days = 62,
  max = { 4294967295 }, -- a day's count saturates at its 4-byte field
  pack = function(stamp, vals, from)
    return spack('<II', stamp, vals[from])
  end,
  -- the ring rides in the blob: read in place (st.ring is the blob read, the ring from byte
  -- st.ring_at + 1) until a slot changes, written by save_state
  ring = function(st)
    return st.ring, st.ring_at
  end,
  put = function(st, off, bytes)
    local ring, at = st.ring, st.ring_at
    if ring then
      st.ring = ssub(ring, at + 1, at + off) .. bytes .. ssub(ring, at + off + 9, at + RING_BYTES)
    else
      st.ring = srep(schar(0), off) .. bytes .. srep(schar(0), RING_BYTES - off - 8)
    end
    st.ring_at = 0
  end,
}
local H_NU, H_HOURN, H_RING, H_FIFON = 9, 10, 11, 12 -- H_RING: 1 once the ring exists
local H_LABELS = 13 -- 1 once a fraud label exists (set by labels.lua), so most skip the lookup
local H_TTL_AT = 14 -- wall clock of the last TTL refresh
-- Mature windows: event counts of the days [D - m - w + 1, D - m] for w = 1, 7, 30, where D is
-- the newest day and m = MATURITY_DAYS; H_MAT_M is the m they were computed with (a changed
-- setting recomputes them from the ring).
local H_MAT_M, H_M1, H_M7, H_M30 = 15, 16, 17, 18
local N_HDR = 18
local HDR_FMT = rep_fmt('d', N_HDR)
local MATURE = { { 1, H_M1 }, { 7, H_M7 }, { 30, H_M30 } }

local HOUR_UNIT = 'If' -- hour number, event count (flat, stride 2)
local N_REC = 17
local REC_FMT = rep_fmt('f', N_REC)
local FIFO_W = 16 + 4 * N_REC
local ONE = { 1 }
-- Hours kept: the 24-hour window of an event up to the tolerance older than the newest.
local KEEP_HOURS = 24 + math.ceil(TOL_MS / HOUR_MS)

-- The entity's state; nil and an error message if its blob has another layout version.
local function load_state(base)
  local st = {
    skey = base .. ':s', ukey = base .. ':u', bkey = base .. ':b',
    dirty = false, rolled = false, created = false, u_created = false,
  }
  local raw = rcall('GET', st.skey)
  if not raw then
    st.created = true
    local h = zeros(N_HDR)
    h[1] = LAYOUT_VERSION
    h[DAYS.day] = -1
    -- labels may precede the first event seen here (a replay, a late start)
    h[H_LABELS] = rcall('EXISTS', st.bkey)
    h[H_MAT_M] = MATURITY_DAYS
    st.hdr, st.hours = h, {}
    fifo_load(st, '', 1, 0, FIFO_W, 0)
    return st
  end
  local version = sunpack('<d', raw) -- first: an older header may be shorter
  if version ~= LAYOUT_VERSION then
    return nil, layout_error(st.skey, version, LAYOUT_VERSION)
  end
  local h, pos = unpack_at(HDR_FMT, raw, 1)
  st.hdr = h
  if h[H_HOURN] > 0 then
    st.hours, pos = unpack_at(rep_fmt(HOUR_UNIT, h[H_HOURN]), raw, pos)
  else
    st.hours = {}
  end
  if h[H_RING] == 1 then
    st.ring, st.ring_at = raw, pos - 1
    pos = pos + RING_BYTES
  end
  fifo_load(st, raw, pos, h[H_FIFON], FIFO_W, h[H_NEWEST])
  return st
end

local function save_state(st)
  local h = st.hdr
  refresh_due(st, h, H_TTL_AT)
  fifo_prune(st)
  h[H_HOURN], h[H_FIFON] = #st.hours / 2, st.fifo_n
  h[H_RING] = st.ring and 1 or 0
  local ttl1, ttl2 = ttl_args(st, h, H_TTL_AT)
  local ring, at = st.ring, st.ring_at
  if ring and at > 0 then
    ring = ssub(ring, at + 1, at + RING_BYTES)
  end
  local blob = tconcat(fifo_encode(st, {
    spack(HDR_FMT, unpack(h)),
    pack_records(HOUR_UNIT, st.hours, 2, 1),
    ring or '',
  }))
  if ttl2 then
    rcall('SET', st.skey, blob, ttl1, ttl2)
  else
    rcall('SET', st.skey, blob, ttl1)
  end
  if st.refresh or st.u_created then
    rcall('PEXPIRE', st.ukey, TTL_MS)
  end
end

-- Count this event in its hour; return the events of its hour and the 23 before (hour-granular
-- 24-hour window), dropping hours no on-time event can need.
local function count_24h(st, h, t)
  local hours = st.hours
  local hh = floor(t / HOUR_MS)
  local at = #hours + 1
  while at > 1 and hours[at - 2] > hh do
    at = at - 2
  end
  if at > 1 and hours[at - 2] == hh then
    hours[at - 1] = hours[at - 1] + 1
  elseif at == #hours + 1 then
    hours[at], hours[at + 1] = hh, 1
  else
    tinsert(hours, at, 1)
    tinsert(hours, at, hh)
  end
  local n24 = 0
  for k = #hours - 1, 1, -2 do
    local hk = hours[k]
    if hk <= hh - 24 then
      break
    end
    if hk <= hh then
      n24 = n24 + hours[k + 1]
    end
  end
  -- drop the hours no on-time event can need, in place (the list is sorted)
  local oldest = floor(h[H_NEWEST] / HOUR_MS) - KEEP_HOURS
  if hours[1] < oldest then
    local n, first = #hours, 1
    while first < n and hours[first] < oldest do
      first = first + 2
    end
    local shift = first - 1
    for k = first, n do
      hours[k - shift] = hours[k]
    end
    for k = n - shift + 1, n do
      hours[k] = nil
    end
  end
  return n24
end

-- Sum of the stored daily counts of days [from, to] (0 when to < from or there is no ring).
local function ring_sum(st, from, to)
  local ring, at = st.ring, st.ring_at
  local acc = { 0 }
  if ring then
    for k = from, to do
      ring_add(DAYS, ring, at, k, acc, 1, 1)
    end
  end
  return acc[1]
end

-- Slide the mature-window caches from the newest day `old` (-1: none) to the newest day now,
-- or recompute them from the ring (new entity, long gap, changed maturity). On a roll by one
-- day that is a few slot reads: the day entering each window and the day leaving it.
local function mature_roll(st, h, old)
  local d, m = h[DAYS.day], MATURITY_DAYS
  local fresh = old < 0 or h[H_MAT_M] ~= m
  h[H_MAT_M] = m
  for i = 1, 3 do
    local w, slot = MATURE[i][1], MATURE[i][2]
    local e_old, e_new = old - m, d - m
    if fresh or e_new - e_old >= w then
      h[slot] = ring_sum(st, e_new - w + 1, e_new)
    else
      h[slot] = h[slot] + ring_sum(st, e_old + 1, e_new) - ring_sum(st, e_old - w + 1, e_new - w)
    end
  end
end

-- Event counts of the mature windows of an event on day `day` (the cached ones for the newest
-- day; a late event's own from the ring).
local function mature_counts(st, h, day)
  if day == h[DAYS.day] then
    return h[H_M1], h[H_M7], h[H_M30]
  end
  local e = day - MATURITY_DAYS
  return ring_sum(st, e, e), ring_sum(st, e - 6, e), ring_sum(st, e - 29, e)
end

-- Fraud labels known by t: of events in (t - 30d, t]; of events in the mature windows of day
-- `day`; and the time of the latest labelled event. A label's time is never before its
-- event's, so only labels timed from the oldest window's start to t can qualify.
local function label_facts(st, h, t, day)
  local labels, f1, f7, f30, latest = 0, 0, 0, 0, -1
  if h[H_LABELS] == 0 then
    return labels, f1, f7, f30, latest
  end
  local e = day - MATURITY_DAYS
  local members = rcall('ZRANGEBYSCORE', st.bkey, mmin((e - 29) * DAY_MS, t - MONTH_MS + 1), t)
  for i = 1, #members do
    local et = sunpack('<d', members[i])
    if et <= t then
      if et > t - MONTH_MS then
        labels = labels + 1
      end
      if et > latest then
        latest = et
      end
      local ed = floor(et / DAY_MS)
      if ed <= e and ed > e - 30 then
        f30 = f30 + 1
        if ed > e - 7 then
          f7 = f7 + 1
          if ed == e then
            f1 = f1 + 1
          end
        end
      end
    end
  end
  return labels, f1, f7, f30, latest
end

local function apply_op(st, op)
  local t, idh, customer = sunpack('<dc8Hc0', op)
  local snapshot = fifo_find(st, idh)
  if snapshot then
    return 1, snapshot
  end
  st.dirty = true
  local h = st.hdr
  if h[H_N] == 0 or t < h[H_FIRST] then
    h[H_FIRST] = t
  end
  if t > h[H_NEWEST] then
    h[H_NEWEST] = t
  end
  h[H_N] = h[H_N] + 1

  -- hourly counts for the 24-hour window (hour-granular: the event's hour and the 23 before)
  local n24 = count_24h(st, h, t)

  local day, old_day = floor(t / DAY_MS), h[DAYS.day]
  local w7, w30 = add_to_day(st, DAYS, day, ONE)
  local newest_day = h[DAYS.day]
  if newest_day ~= old_day or h[H_MAT_M] ~= MATURITY_DAYS then
    mature_roll(st, h, old_day)
  elseif day < newest_day and day >= newest_day - DAYS.keep_days then
    -- a late event in a past day joins the cached mature windows that cover its day
    for i = 1, 3 do
      local w, slot = MATURE[i][1], MATURE[i][2]
      if day <= newest_day - MATURITY_DAYS and day > newest_day - MATURITY_DAYS - w then
        h[slot] = h[slot] + 1
      end
    end
  end
  if st.rolled then
    -- once per active day: customers older than the exposure fan-out can need leave a big
    -- zset (labels.lua reads customers of the 30 days before a confirmation)
    st.rolled = false
    if h[H_NU] > PRUNE_AT then
      h[H_NU] = h[H_NU]
        - rcall('ZREMRANGEBYSCORE', st.ukey, '-inf', h[H_NEWEST] - MONTH_MS - TOL_MS - 1)
    end
  end

  -- distinct customers: each customer's latest time here; counted if after the window start
  if h[H_NU] == 0 then
    st.u_created = true
  end
  h[H_NU] = cap_zset(st.ukey, h[H_NU] + rcall('ZADD', st.ukey, 'GT', t, customer))
  local customers24 = rcall('ZCOUNT', st.ukey, t - DAY_MS + 1, '+inf')
  local customers7 = rcall('ZCOUNT', st.ukey, t - WEEK_MS + 1, '+inf')

  -- label-derived risk: only labels already received (label time <= t), never the future
  local labels, f1, f7, f30, latest = label_facts(st, h, t, day)
  local rate = mmin(1, labels / mmax(1, w30[1]))
  local c1, c7, c30 = mature_counts(st, h, day)
  local since_fraud = -1
  if latest >= 0 then
    since_fraud = (t - latest) / DAY_MS
  end

  local record = spack(REC_FMT,
    n24, w7[1], customers24, customers7, labels, rate, (t - h[H_FIRST]) / DAY_MS,
    c1, c7, c30, f1, f7, f30,
    mmin(1, f1 / mmax(1, c1)), mmin(1, f7 / mmax(1, c7)), mmin(1, f30 / mmax(1, c30)),
    since_fraud)
  fifo_push(st, idh, h[H_NEWEST], record)
  return 0, record
end
