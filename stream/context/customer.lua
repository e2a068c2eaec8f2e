-- Customer context: apply each event and return the customer's features as of the event's time
-- (the event included). Appended to common.lua by store.py; the record order is
-- CUSTOMER_RECORD in features.py.
--
-- Keys under the base "<ns>:{c:<customer_id>}":
--   :s  state blob: header | recent-event log | past-day list | recent outbound | dedupe FIFO
--   :k  hash of first-seen times: 'p'..counterparty, 'd'..device, 'k'..country -> packed double
--   :z  zset 'p'..inbound sender -> its latest inbound time (distinct senders over 7 days)

-- header (doubles): 1 layout version, then
local H_FIRST, H_NEWEST, H_N = 2, 3, 4
local H_OUT, H_IN = 5, 9              -- per direction: n, mean ln(1+x), M2, sum (4 values each)
local H_DROP_PREV, H_DROP_IN = 13, 14 -- newest times among events pruned from the log
local H_LAST_IN = 15                  -- newest inbound time
-- 16 newest day, 17..22 its totals, 23..28 totals of the 6 days before, 29..34 of the 29 before
local DAYS = { day = 16, today = 17, c7 = 23, c30 = 29, nv = 6, unit = 'dffffff', size = 32 }
local H_NP, H_ND, H_NZ = 35, 36, 37   -- first-seen counterparties, devices; sender zset size
local H_LOGN, H_DAYSN, H_RON, H_FIFON = 38, 39, 40, 41
local N_HDR = 41
local HDR_FMT = rep_fmt('d', N_HDR)

-- day values: out count, out sum, in count, in sum, near-threshold cash deposits, cash-in sum
local V_OUT_N, V_OUT_S, V_IN_N, V_IN_S, V_NEAR, V_CASH = 1, 2, 3, 4, 5, 6

-- log record (stride 7): time, amount USD, flags, counterparty hash, device hash, country, id
local LOG_UNIT, LW = 'dfHIIHc8', 7
local LOG_SIZE = 32
local RO_UNIT, RW, RO_CAP = 'dfI', 3, 16 -- recent outbound transfers: time, amount, cp hash
local N_REC = 39
local REC_FMT = rep_fmt('f', N_REC)
local FIFO_W = 16 + 4 * N_REC

-- flags (bits 0-6 from ops.py, bit 8 set here)
local F_OUT, F_SMALL, F_ECOM, F_RISKY, F_CASH_IN, F_NEAR, F_TRANSFER = 1, 2, 4, 8, 16, 32, 64
local F_CP_NEW = 256

local SD_FLOOR = 0.25        -- ln units: a customer paying the same amount has std ~0
local Z_LIMIT = 50
local ROUND_TRIP_TOLERANCE = 0.05

local function load_state(base)
  local st = {
    skey = base .. ':s', kkey = base .. ':k', zkey = base .. ':z',
    dirty = false, rolled = false, rolled_any = false, k_written = false, z_written = false,
  }
  local raw = rcall('GET', st.skey)
  if not raw then
    local h = zeros(N_HDR)
    h[1] = 1
    h[H_DROP_PREV], h[H_DROP_IN], h[H_LAST_IN], h[DAYS.day] = -1, -1, -1, -1
    st.hdr, st.log, st.log_first, st.ro = h, {}, 1, {}
    st.days_raw, st.days_n, st.fifo_n = '', 0, 0
    fifo_load(st, '')
    return st
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
  n = h[H_DAYSN]
  st.days_n = n
  st.days_raw = ssub(raw, pos, pos + DAYS.size * n - 1)
  pos = pos + DAYS.size * n
  n = h[H_RON]
  if n > 0 then
    st.ro, pos = unpack_at(rep_fmt(RO_UNIT, n), raw, pos)
  else
    st.ro = {}
  end
  st.fifo_n = h[H_FIFON]
  fifo_load(st, ssub(raw, pos, pos + FIFO_W * st.fifo_n - 1))
  return st
end

local function save_state(st)
  local h = st.hdr
  local newest = h[H_NEWEST]
  fifo_prune(st, newest, FIFO_W)
  -- recent outbound transfers older than the round-trip window (and a day) are useless
  local ro = st.ro
  local ro_first = 1
  while ro_first <= #ro and ro[ro_first] <= newest - MONTH_MS - DAY_MS do
    ro_first = ro_first + RW
  end
  ro_first = (ro_first - 1) / RW + 1
  local days = encode_days(st, DAYS)
  local log_n = #st.log / LW - st.log_first + 1
  h[H_LOGN], h[H_DAYSN], h[H_RON], h[H_FIFON] =
    log_n, #days / DAYS.size, #ro / RW - ro_first + 1, st.fifo_n
  rcall('SET', st.skey, tconcat({
    spack(HDR_FMT, unpack(h)),
    pack_records(LOG_UNIT, st.log, LW, st.log_first),
    days,
    pack_records(RO_UNIT, ro, RW, ro_first),
    fifo_encode(st),
  }), 'PX', PROFILE_TTL_MS)
  -- A key created by HSET/ZADD gets its TTL in the same call; otherwise a daily refresh keeps
  -- an active customer's keys alive (the day rolls over at most once per active day).
  if st.k_written or st.rolled_any then
    rcall('PEXPIRE', st.kkey, TTL_MS)
  end
  if st.z_written or (st.rolled_any and h[H_NZ] > 0) then
    rcall('PEXPIRE', st.zkey, TTL_MS)
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

local function apply_op(st, op)
  local t, amt, flags, cph, devh, cc, idh, pfield, kfield, dfield =
    sunpack('<ddHIIHc8Hc0Hc0Hc0', op)
  local snapshot = fifo_find(st, idh, FIFO_W)
  if snapshot then
    return 1, snapshot
  end
  st.dirty = true
  local h = st.hdr
  local first_event = h[H_N] == 0
  local newest_before = h[H_NEWEST]
  local late = (not first_event) and t < newest_before - TOL_MS
  local outbound = band(flags, F_OUT) ~= 0

  -- previous event and previous inbound: from the header when this event is the newest,
  -- otherwise from the log (and the newest pruned times)
  local prev, prev_in = -1, -1
  local scan_prev = true
  if not first_event and newest_before <= t then
    prev, scan_prev = newest_before, false
  end
  local scan_in = true
  if h[H_LAST_IN] >= 0 and h[H_LAST_IN] <= t then
    prev_in, scan_in = h[H_LAST_IN], false
  end

  -- first-seen lookups: counterparty, country, device - one HMGET
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
    st.k_written = true
    h[H_NP] = evict_seen(st, 'p', h[H_NP], SEEN_CAP)
    h[H_ND] = evict_seen(st, 'd', h[H_ND], DEVICE_CAP)
  end

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

  -- recent-event log (sorted by time; an equal time goes after what arrived before it)
  local log, first = st.log, st.log_first
  local at = #log + 1 -- index of the new record's first value
  local lo_index = (first - 1) * LW + 1
  while at > lo_index and log[at - LW] > t do
    at = at - LW
  end
  if at == #log + 1 then
    log[at], log[at + 1], log[at + 2], log[at + 3] = t, amt, flags, cph
    log[at + 4], log[at + 5], log[at + 6] = devh, cc, idh
  else
    local rec = { t, amt, flags, cph, devh, cc, idh }
    for j = LW, 1, -1 do
      tinsert(log, at, rec[j])
    end
  end

  local oc1, os1, oc24, os24, ic24, is24 = 0, 0, 0, 0, 0, 0
  local small1, ecom1, risky1, newcp24 = 0, 0, 0, 0
  local cps1, ncps1, cps24, ncps24, ccs, nccs, devs, ndevs = {}, 0, {}, 0, {}, 0, {}, 0
  local lo24, lo1 = t - DAY_MS, t - HOUR_MS
  for k = #log - LW + 1, lo_index, -LW do
    local ti = log[k]
    if ti <= t then
      if ti <= lo24 and not scan_prev and not scan_in then
        break
      end
      local f = log[k + 2]
      local out = band(f, F_OUT) ~= 0
      if k ~= at then
        if scan_prev and ti > prev then
          prev = ti
        end
        if scan_in and not out and ti > prev_in then
          prev_in = ti
        end
      end
      if ti > lo24 then
        local a, cp, dv, c = log[k + 1], log[k + 3], log[k + 4], log[k + 5]
        if out then
          oc24, os24 = oc24 + 1, os24 + a
        else
          ic24, is24 = ic24 + 1, is24 + a
        end
        if not cps24[cp] then
          cps24[cp], ncps24 = true, ncps24 + 1
        end
        if not ccs[c] then
          ccs[c], nccs = true, nccs + 1
        end
        if dv ~= 0 and not devs[dv] then
          devs[dv], ndevs = true, ndevs + 1
        end
        if f >= F_CP_NEW then
          newcp24 = newcp24 + 1
        end
        if ti > lo1 then
          if out then
            oc1, os1 = oc1 + 1, os1 + a
          end
          if not cps1[cp] then
            cps1[cp], ncps1 = true, ncps1 + 1
          end
          if band(f, F_SMALL) ~= 0 then
            small1 = small1 + 1
          end
          if band(f, F_ECOM) ~= 0 then
            ecom1 = ecom1 + 1
          end
          if band(f, F_RISKY) ~= 0 then
            risky1 = risky1 + 1
          end
        end
      end
    end
  end
  local dropped = h[H_DROP_PREV]
  if scan_prev and dropped >= 0 and dropped <= t and dropped > prev then
    prev = dropped
  end
  dropped = h[H_DROP_IN]
  if scan_in and dropped >= 0 and dropped <= t and dropped > prev_in then
    prev_in = dropped
  end

  -- day windows (7d, 30d)
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
    st.rolled, st.rolled_any = false, true
    if h[H_NZ] > 0 then
      h[H_NZ] = h[H_NZ]
        - rcall('ZREMRANGEBYSCORE', st.zkey, '-inf', h[H_NEWEST] - WEEK_MS - TOL_MS - 1)
    end
  end

  -- distinct inbound senders over 7 days (fan-in)
  if not outbound then
    h[H_NZ] = cap_zset(st.zkey, h[H_NZ] + rcall('ZADD', st.zkey, 'GT', t, pfield))
    st.z_written = true
  end
  local senders = 0
  if h[H_NZ] > 0 then
    senders = rcall('ZCOUNT', st.zkey, t - WEEK_MS + 1, '+inf')
  end

  -- amount against this customer's usual in the same direction (Welford on ln(1 + amount))
  local b = outbound and H_OUT or H_IN
  local n, mean, m2, sum = h[b], h[b + 1], h[b + 2], h[b + 3]
  local x = mlog(1 + amt)
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

  -- round trip: an inbound transfer close to an outbound transfer sent in the last 30 days
  -- to someone else (a refund from the same counterparty is not a round trip)
  local rt_match, rt_days = 0, -1
  if band(flags, F_TRANSFER) ~= 0 then
    local ro = st.ro
    if outbound then
      local m = #ro
      ro[m + 1], ro[m + 2], ro[m + 3] = t, amt, cph
      if m >= RO_CAP * RW then
        st.ro = { unpack(ro, RW + 1, m + RW) }
      end
    else
      local best = -1
      for k = 1, #ro, RW do
        local rt = ro[k]
        if rt <= t and rt > t - MONTH_MS and ro[k + 2] ~= cph and rt > best
          and mabs(amt - ro[k + 1]) <= ROUND_TRIP_TOLERANCE * ro[k + 1] then
          best = rt
        end
      end
      if best >= 0 then
        rt_match, rt_days = 1, (t - best) / DAY_MS
      end
    end
  end

  local since_prev, since_in, out_in = -1, -1, -1
  if prev >= 0 then
    since_prev = (t - prev) / 1000
  end
  if prev_in >= 0 then
    since_in = (t - prev_in) / 1000
  end
  if is24 > 0 then
    out_in = os24 / is24
  end
  local record = spack(REC_FMT,
    oc1, os1, oc24, os24, ic24, is24,
    w7[V_OUT_N], w7[V_OUT_S], w7[V_IN_N], w7[V_IN_S],
    w30[V_OUT_N], w30[V_OUT_S], w30[V_IN_N], w30[V_IN_S],
    ncps1, ncps24, nccs, ndevs,
    cp_new, known_days, newcp24, device_new, country_new,
    z, ratio, n,
    since_prev, (t - h[H_FIRST]) / DAY_MS,
    small1, ecom1, risky1,
    w7[V_NEAR], w7[V_CASH], senders,
    since_in, out_in, rt_match, rt_days,
    late and 1 or 0)
  fifo_push(st, idh, h[H_NEWEST], record)

  -- forget log records no on-time event can need: older than newest - (24h + tolerance), or
  -- beyond the cap (the record's values stay in the header's "newest pruned" times)
  local horizon = h[H_NEWEST] - DAY_MS - TOL_MS
  local count = #log / LW - first + 1
  local k = (first - 1) * LW + 1
  while count > 0 and (log[k] <= horizon or count > LOG_CAP) do
    if log[k] > h[H_DROP_PREV] then
      h[H_DROP_PREV] = log[k]
    end
    if band(log[k + 2], F_OUT) == 0 and log[k] > h[H_DROP_IN] then
      h[H_DROP_IN] = log[k]
    end
    first, count, k = first + 1, count - 1, k + LW
  end
  if first > 64 then -- compact now and then, so the dead prefix stays small
    st.log = { unpack(log, k, #log) }
    first = 1
  end
  st.log_first = first
  return 0, record
end
