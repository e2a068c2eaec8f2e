-- Shared prelude of customer.lua and counterparty.lua (store.py prepends it to each).
--
-- Calling convention: KEYS[i] is the entity base key of op i ("<ns>:{c:<id>}"), ARGV[1] the
-- packed configuration, ARGV[i + 1] the packed op. All state of one entity lives under its base
-- key, so a call may hold ops of many entities (standalone Redis: the whole batch in one call)
-- or of the entities of one hash slot (Redis Cluster). State is loaded on an entity's first op,
-- kept in Lua tables while the call runs, and written back once at the end.
--
-- Speed notes (Redis' Lua 5.1 interpreter, measured on the 2-core benchmark machine): a small
-- table costs ~0.1 us, one with named fields ~0.4 us, a number-to-string conversion ~0.5 us, a
-- global function lookup ~0.05 us. Hence flat arrays with a stride instead of a table per
-- record, functions bound to locals, and numbers passed to redis.call as numbers (Redis formats
-- them in C) with inclusive integer-millisecond bounds instead of '(' .. x strings.

local spack, sunpack = struct.pack, struct.unpack
local ssub, sfind, srep, schar = string.sub, string.find, string.rep, string.char
local tinsert, tconcat = table.insert, table.concat
local floor, mmin, mmax, msqrt, mlog, mabs = math.floor, math.min, math.max, math.sqrt,
  math.log, math.abs
local band = bit.band
local rcall = redis.call

local DAY_MS = 86400000
local HOUR_MS = 3600000
local WEEK_MS = 7 * DAY_MS
local MONTH_MS = 30 * DAY_MS
-- Past days kept: the 30-day window of an event up to a day older than the newest.
local KEEP_DAYS = 31

local cfg = { sunpack('<ddddddddd', ARGV[1]) }
local TTL_MS = cfg[1]           -- every window-bearing key (35 days by default)
local PROFILE_TTL_MS = cfg[2]   -- the state blob with the long-memory profile (400 days)
local TOL_MS = cfg[3]           -- out-of-order tolerance
local LOG_CAP = cfg[4]          -- customer: recent-event log entries
local SEEN_CAP = cfg[5]         -- customer: first-seen counterparties
local DEVICE_CAP = cfg[6]       -- customer: first-seen devices
local SET_CAP = cfg[7]          -- inbound senders (customer) / customers (counterparty)
local DEDUPE_CAP = cfg[8]       -- event ids remembered per entity, at most
local DEDUPE_SPAN_MS = cfg[9]   -- ... and while the entity's newest time is this close

-- TTLs are wall clock (Redis expires keys by it). Refreshing them costs a command per key, so
-- it happens when an entity is created or its last refresh (header stamp) is REFRESH_MS old;
-- a key that may have just been (re)created by a write gets its TTL in the same call.
local REFRESH_MS = HOUR_MS
local NOW_MS
do
  local tm = rcall('TIME')
  NOW_MS = tonumber(tm[1]) * 1000 + floor(tonumber(tm[2]) / 1000)
end

-- SET arguments for a state blob: a fresh TTL when due, else keep the current one.
local function ttl_args(st, h, stamp_index)
  if st.refresh then
    h[stamp_index] = NOW_MS
    return 'PX', PROFILE_TTL_MS
  end
  return 'KEEPTTL'
end

local function refresh_due(st, h, stamp_index)
  st.refresh = st.created or NOW_MS - h[stamp_index] >= REFRESH_MS
end

local fmt_cache = {}
-- '<' followed by `unit` repeated n times (memoised per unit and count).
local function rep_fmt(unit, n)
  local by_n = fmt_cache[unit]
  if not by_n then
    by_n = {}
    fmt_cache[unit] = by_n
  end
  local f = by_n[n]
  if not f then
    f = '<' .. srep(unit, n)
    by_n[n] = f
  end
  return f
end

-- struct.unpack into a flat table; also returns the position after the last byte read.
local function unpack_at(fmt, s, pos)
  local v = { sunpack(fmt, s, pos) }
  local n = #v
  local nxt = v[n]
  v[n] = nil
  return v, nxt
end

-- Flat array `a` (stride w) from record `first` on, packed with `unit` (w values per record).
local function pack_records(unit, a, w, first)
  local n = #a / w - first + 1
  if n <= 0 then
    return ''
  end
  if first == 1 then
    return spack(rep_fmt(unit, n), unpack(a))
  end
  return spack(rep_fmt(unit, n), unpack(a, (first - 1) * w + 1, #a))
end

----------------------------------------------------------------------------------------------
-- Day-granular windows (7d, 30d). The header holds the newest day D, its running totals and
-- cached totals over days [D-6, D-1] and [D-29, D-1]. Past days live in the entity's ':d'
-- hash (field: the day number as 2 bytes, value: its packed totals), touched only when the day
-- rolls over - store yesterday, fetch the few days leaving the windows, forget the day leaving
-- the kept range - or when a late event lands in a past day. An event on the newest day
-- touches only header numbers, and the blob read for every event stays small (a GET inside
-- Redis' Lua costs ~1.7 us per KiB on the benchmark machine). Totals are integers (counts,
-- cents), so the caches kept by additions and subtractions are exact.
--
-- `L` describes the layout: L.day, L.today, L.c7, L.c30 (header indices), L.nv (values per
-- day), L.unit (struct unit of a day's values), L.caps (per-value maxima, false for none),
-- L.count (header index of the number of stored days).

local function day_field(d)
  return spack('<H', d)
end

local function zeros(n)
  local z = {}
  for j = 1, n do
    z[j] = 0
  end
  return z
end

-- Add the stored totals of days lo..hi (a few at a roll; up to 30 for a late event) into acc.
local function add_days(st, L, lo, hi, acc, sign)
  if hi < lo then
    return acc
  end
  local fields = {}
  for d = lo, hi do
    fields[#fields + 1] = day_field(d)
  end
  local got = rcall('HMGET', st.dkey, unpack(fields))
  local fmt = rep_fmt(L.unit, 1)
  for i = 1, #got do
    if got[i] then
      local v = { sunpack(fmt, got[i]) }
      for j = 1, L.nv do
        acc[j] = acc[j] + sign * v[j]
      end
    end
  end
  return acc
end

local function pack_day(L, vals)
  local caps, out = L.caps, {}
  for j = 1, L.nv do
    local v = vals[j]
    if caps and caps[j] and v > caps[j] then
      v = caps[j] -- a 16-bit count field saturates instead of wrapping
    end
    out[j] = v
  end
  return spack(rep_fmt(L.unit, 1), unpack(out))
end

-- Store a day's totals; counts stored days in the header (so the TTL can be set when the hash
-- is created, without a command to find out).
local function store_day(st, L, d, vals)
  local h = st.hdr
  local added = rcall('HSET', st.dkey, day_field(d), pack_day(L, vals))
  if added == 1 then
    if h[L.count] == 0 then
      st.d_created = true
    end
    h[L.count] = h[L.count] + 1
  end
end

-- Make day d the newest: the old newest day's totals are stored, caches slide to d.
local function roll_day(st, L, d)
  local h, nv = st.hdr, L.nv
  local old, today, c7, c30 = h[L.day], L.today, L.c7, L.c30
  local gap = d - old
  local todays = {}
  local any = false
  for j = 1, nv do
    todays[j] = h[today + j - 1]
    if todays[j] ~= 0 then
      any = true
    end
  end
  local w30, w7 = zeros(nv), zeros(nv)
  if gap > KEEP_DAYS then
    -- a long silence: every stored day is out of every window
    if h[L.count] > 0 then
      rcall('DEL', st.dkey)
      h[L.count] = 0
    end
  else
    if any then
      store_day(st, L, old, todays)
    end
    if gap < 30 then
      -- [old-29, old-1] + old -> [d-29, d-1]: days old-29 .. d-30 leave; likewise for 7 days.
      -- One HMGET fetches the leaving days of both windows.
      local lo30, hi30, lo7, hi7 = old - 29, d - 30, old - 6, d - 7
      local fields = {}
      for k = lo30, hi30 do
        fields[#fields + 1] = day_field(k)
      end
      local n30 = #fields
      if gap <= 6 then
        for k = lo7, hi7 do
          fields[#fields + 1] = day_field(k)
        end
      end
      for j = 1, nv do
        w30[j] = h[c30 + j - 1] + todays[j]
        if gap <= 6 then
          w7[j] = h[c7 + j - 1] + todays[j]
        end
      end
      if #fields > 0 and h[L.count] > 0 then
        local got = rcall('HMGET', st.dkey, unpack(fields))
        local fmt = rep_fmt(L.unit, 1)
        for i = 1, #got do
          if got[i] then
            local v = { sunpack(fmt, got[i]) }
            local acc = i <= n30 and w30 or w7
            for j = 1, nv do
              acc[j] = acc[j] - v[j]
            end
          end
        end
      end
    end
    -- Forget days out of reach (a late event may still need the 30 days before d-1) every
    -- eighth day: fewer commands, a hash of at most ~50 small fields.
    if floor(d / 8) ~= floor(old / 8) and h[L.count] > 0 then
      local forget = {}
      for k = old - KEEP_DAYS - 16, d - KEEP_DAYS - 1 do
        forget[#forget + 1] = day_field(k)
      end
      h[L.count] = h[L.count] - rcall('HDEL', st.dkey, unpack(forget))
    end
  end
  for j = 1, nv do
    h[today + j - 1] = 0
    h[c7 + j - 1] = w7[j]
    h[c30 + j - 1] = w30[j]
  end
  h[L.day] = d
  st.rolled = true
end

-- Add `vals` to day d; return the 7-day and 30-day totals as of day d (including vals).
local function add_to_day(st, L, d, vals)
  local h, nv = st.hdr, L.nv
  if h[L.day] < 0 then
    h[L.day] = d
  elseif d > h[L.day] then
    roll_day(st, L, d)
  end
  local w7, w30 = {}, {}
  local newest, today, c7, c30 = h[L.day], L.today, L.c7, L.c30
  if d == newest then
    for j = 0, nv - 1 do
      local v = h[today + j] + vals[j + 1]
      h[today + j] = v
      w7[j + 1] = h[c7 + j] + v
      w30[j + 1] = h[c30 + j] + v
    end
    return w7, w30
  end
  -- A late event in a past day: applied to that day (if still kept) and to the caches that
  -- cover it; its own windows are computed as of its day from the stored days.
  if d >= newest - KEEP_DAYS then
    local field = day_field(d)
    local stored = rcall('HGET', st.dkey, field)
    local day = stored and { sunpack(rep_fmt(L.unit, 1), stored) } or zeros(nv)
    for j = 1, nv do
      day[j] = day[j] + vals[j]
      if d >= newest - 29 then
        h[c30 + j - 1] = h[c30 + j - 1] + vals[j]
      end
      if d >= newest - 6 then
        h[c7 + j - 1] = h[c7 + j - 1] + vals[j]
      end
    end
    store_day(st, L, d, day)
  end
  return add_days(st, L, d - 6, d, zeros(nv), 1), add_days(st, L, d - 29, d, zeros(nv), 1)
end

----------------------------------------------------------------------------------------------
-- Dedupe memory: a FIFO (by arrival) of entries {8-byte event-id hash, stamp, record}, kept in
-- the state blob as a raw string, where stamp is the entity's newest event time when the event
-- arrived and record the packed features returned for it. An id is forgotten once DEDUPE_CAP
-- newer ids arrived, or once the entity's newest event time is DEDUPE_SPAN_MS past its stamp.
-- Event time, not wall clock, so that a replay makes exactly the dedupe decisions live traffic
-- made, and a fast replay does not remember its whole history; redelivery repeats the
-- uncommitted tail of a partition, whose events are the entity's latest arrivals, well within a
-- day of event time unless traffic is so sparse that a batch spans days. A quiet entity
-- remembers a few events, so the blob stays small. Lookups are a plain substring search
-- (C speed) checked for entry alignment. (Keeping the records in a separate hash was
-- measured: an HSET, an HDEL and a PEXPIRE per event cost more than a few records in the blob.)

local function fifo_load(st, raw, width)
  st.fifo_raw = raw
  st.fifo_pos = 1
  st.fifo_add = {}
  st.fifo_w = width
end

local function fifo_push(st, idh, stamp, record)
  local add = st.fifo_add
  add[#add + 1] = idh .. spack('<d', stamp) .. record
  st.fifo_n = st.fifo_n + 1
end

-- The record stored for idh, or nil.
local function fifo_find(st, idh)
  local raw, base, width = st.fifo_raw, st.fifo_pos, st.fifo_w
  local from = base
  while true do
    local s = sfind(raw, idh, from, true)
    if not s then
      break
    end
    if (s - base) % width == 0 then
      return ssub(raw, s + 16, s + width - 1)
    end
    from = s + 1
  end
  local add = st.fifo_add
  for i = 1, #add do
    local e = add[i]
    if ssub(e, 1, 8) == idh then
      return ssub(e, 17)
    end
  end
  return nil
end

local function fifo_prune(st, newest)
  local floor_stamp = newest - DEDUPE_SPAN_MS
  local width = st.fifo_w
  while st.fifo_n > 0 do
    if st.fifo_pos > #st.fifo_raw then
      st.fifo_raw = tconcat(st.fifo_add)
      st.fifo_add = {}
      st.fifo_pos = 1
    end
    local stamp = sunpack('<d', st.fifo_raw, st.fifo_pos + 8)
    if st.fifo_n > DEDUPE_CAP or stamp < floor_stamp then
      st.fifo_pos = st.fifo_pos + width
      st.fifo_n = st.fifo_n - 1
    else
      break
    end
  end
end

local function fifo_encode(st)
  return ssub(st.fifo_raw, st.fifo_pos) .. tconcat(st.fifo_add)
end

-- Zsets smaller than this are not pruned by time (their TTL bounds them); bigger ones are,
-- once per active day, so busy entities do not carry a week-old tail.
local PRUNE_AT = 64

-- Trim a zset to SET_CAP members, dropping the lowest scores (least recently seen).
local function cap_zset(key, n)
  if n > SET_CAP then
    return n - rcall('ZREMRANGEBYRANK', key, 0, n - SET_CAP - 1)
  end
  return n
end

local STATUS = { [0] = schar(0), [1] = schar(1) }
