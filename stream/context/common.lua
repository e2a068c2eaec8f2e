-- Shared prelude of customer.lua and counterparty.lua (store.py prepends it to each).
--
-- Calling convention: KEYS[1] is the namespace marker of the call's hash slot, KEYS[i] (i >= 2)
-- the entity base key of an op ("<ns>:{c:<id>}"), ARGV[1] the packed configuration, ARGV[i]
-- the packed op of KEYS[i]. All state of one entity lives under its base key, so a call may
-- hold ops of many entities (standalone Redis: the whole batch in one call) or of the entities
-- of one hash slot (Redis Cluster). State is loaded on an entity's first op, kept in Lua
-- tables while the call runs, and written back once at the end.
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

local cfg = { sunpack('<dddddddddddd', ARGV[1]) }
local TTL_MS = cfg[1]           -- every window-bearing key (35 days by default)
local PROFILE_TTL_MS = cfg[2]   -- the state blob with the long-memory profile (400 days)
local TOL_MS = cfg[3]           -- out-of-order tolerance
local LOG_CAP = cfg[4]          -- customer: recent-event log entries
local SEEN_CAP = cfg[5]         -- customer: first-seen counterparties
local DEVICE_CAP = cfg[6]       -- customer: first-seen devices
local SET_CAP = cfg[7]          -- inbound senders (customer) / customers (counterparty)
local DEDUPE_CAP = cfg[8]       -- event ids remembered per entity, at most
local DEDUPE_SPAN_MS = cfg[9]   -- ... and while the entity's newest time is this close
local MATURITY_DAYS = cfg[10]   -- counterparty: labels of events this many days old have arrived
local EXPOSURE_WINDOW_MS = cfg[11] -- customer: compromised points paid at within this window
local STORY_K = cfg[12]         -- customer: recent events remembered for the story

-- TTLs are wall clock (Redis expires keys by it). Refreshing them costs a command per key, so
-- it happens when an entity is created or its last refresh (header stamp) is REFRESH_MS old;
-- a key that may have just been (re)created by a write gets its TTL in the same call.
local REFRESH_MS = HOUR_MS
local NOW_MS
do
  local tm = rcall('TIME')
  NOW_MS = tonumber(tm[1]) * 1000 + floor(tonumber(tm[2]) / 1000)
end

-- The namespace marker (KEYS[1]) must exist before anything is written: a Redis that lost its
-- data set (a restart without persistence, FLUSHALL, eviction) would otherwise receive this
-- call's ops into empty state - counters restarting from nothing, silently - before anyone
-- noticed. Checked by the script itself, so there is no moment between check and writes. On
-- Redis Cluster KEYS[1] is the marker of the call's own hash slot (a script may touch no other
-- slot), which also notices a single node that came back empty. The check refreshes the
-- marker's TTL (the profile TTL, like the state blobs it vouches for). Returns the error reply
-- to return, or nil.
local function check_marker()
  if rcall('PEXPIRE', KEYS[1], PROFILE_TTL_MS) == 0 then
    return redis.error_reply('LOST riskstream context marker ' .. KEYS[1] .. ' is missing: '
      .. 'Redis lost the namespace (restart without persistence, flush or eviction)')
  end
  return nil
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

-- The first header double of a state blob is its layout version (LAYOUT_VERSION of the entity's
-- script, raised whenever the stored layout changes). A blob of another layout is never read as
-- this one: main.lua checks every entity of a call before any op is applied, and the call
-- fails with an error reply (code LAYOUT, mapped to ContextLayoutMismatch by store.py) having
-- written nothing.
local function layout_error(key, found, expected)
  return string.format('LAYOUT riskstream context layout %g found in %s, this code writes %d: '
    .. 'use a fresh namespace (RISKSTREAM_CONTEXT__NAMESPACE) or drop the old one',
    found, key, expected)
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
-- cached totals over days [D-6, D-1] and [D-29, D-1]. Past days' totals live in a ring of
-- L.ring_days fixed-size slots: day d in slot d % L.ring_days, stamped d + 1 (0: never
-- written), so a slot left over from an older day reads as empty and nothing ever has to be
-- deleted. The ring is read and written only when the newest day rolls over (store the old day,
-- subtract the days leaving the windows) or a late event lands in a past day; an event on the
-- newest day touches header numbers only. Totals are integers (counts, cents), so the caches kept by
-- additions and subtractions are exact.
--
-- (Measured on the benchmark bank, where about half of all events are an entity's first of
-- the day: a hash of day -> totals cost ~100k Redis instructions per roll in HSET/HMGET/HDEL
-- and field packing; the ring costs a few slot reads and one string splice.)
--
-- `L` describes the layout: L.day, L.today, L.c7, L.c30 (header indices), L.nv (values per
-- day), L.max (the largest total each value's ring field holds: a day's total saturates
-- there, in the header as in the ring, so a day leaving a window takes away exactly what it
-- added and no number of events can wrap a field), L.slot_fmt (struct format of a slot:
-- stamp, then the values), L.slot (its bytes), L.pack(stamp, vals, from) (a slot's bytes),
-- L.ring(st),
-- which returns the entity's ring string or nil (loading it if it lives in its own key), and
-- L.put(st, offset, bytes), which stores one slot (a key's slot is written in place with
-- SETRANGE: a 28-byte write instead of re-sending the whole ring).

-- Each layout sets L.keep_days (past days kept: the oldest window an event up to a day older
-- than the newest can need) and L.ring_days (slots, at least keep_days + 1).

local function zeros(n)
  local z = {}
  for j = 1, n do
    z[j] = 0
  end
  return z
end
local W7, W30 = {}, {} -- add_to_day's results (reused: read at once by the caller)

-- Add day k's stored totals (if its slot holds day k) times `sign` into acc[from..from+nv-1];
-- the ring starts after byte `at` of the string `ring`.
local function ring_add(L, ring, at, k, acc, from, sign)
  local off = at + (k % L.ring_days) * L.slot + 1
  if #ring < off then
    return
  end
  local v = { sunpack(L.slot_fmt, ring, off) }
  if v[1] == k + 1 then
    for j = 1, L.nv do
      acc[from + j - 1] = acc[from + j - 1] + sign * v[j + 1]
    end
  end
end

-- Day k's stored totals (a table of L.nv values; zeros when none).
local function ring_get(L, ring, at, k)
  local day = {}
  for j = 1, L.nv do
    day[j] = 0
  end
  if ring then
    ring_add(L, ring, at, k, day, 1, 1)
  end
  return day
end

-- Store `vals` (array, or header values from index `from`) as day k's totals.
local function ring_put(st, L, k, vals, from)
  L.put(st, (k % L.ring_days) * L.slot, L.pack(k + 1, vals, from))
end

-- Make day d the newest: the old newest day's totals are stored, caches slide to d.
local function roll_day(st, L, d)
  local h, nv = st.hdr, L.nv
  local old, today, c7, c30 = h[L.day], L.today, L.c7, L.c30
  local gap = d - old
  local any = false
  for j = 0, nv - 1 do
    if h[today + j] ~= 0 then
      any = true
    end
  end
  if gap < 30 then
    -- [old-29, old-1] + old -> [d-29, d-1]: days old-29 .. d-30 leave; likewise for 7 days
    for j = 0, nv - 1 do
      local v = h[today + j]
      h[c30 + j] = h[c30 + j] + v
      h[c7 + j] = gap <= 6 and h[c7 + j] + v or 0
    end
    local ring, at = L.ring(st)
    if ring then
      for k = old - 29, d - 30 do
        ring_add(L, ring, at, k, h, c30, -1)
      end
      if gap <= 6 then
        for k = old - 6, d - 7 do
          ring_add(L, ring, at, k, h, c7, -1)
        end
      end
    end
  else
    for j = 0, nv - 1 do
      h[c30 + j], h[c7 + j] = 0, 0
    end
  end
  -- the old day stays readable for late events (and leaves the windows through the ring)
  if any and gap <= L.keep_days then
    ring_put(st, L, old, h, today)
  end
  for j = 0, nv - 1 do
    h[today + j] = 0
  end
  h[L.day] = d
  st.rolled = true
end

-- Add `vals` to day d; returns W7 and W30, the 7-day and 30-day totals as of day d (including
-- vals), valid until the next call.
local function add_to_day(st, L, d, vals)
  local h, nv, max = st.hdr, L.nv, L.max
  if h[L.day] < 0 then
    h[L.day] = d
  elseif d > h[L.day] then
    roll_day(st, L, d)
  end
  local newest, today, c7, c30 = h[L.day], L.today, L.c7, L.c30
  if d == newest then
    for j = 0, nv - 1 do
      local v = mmin(h[today + j] + vals[j + 1], max[j + 1])
      h[today + j] = v
      W7[j + 1] = h[c7 + j] + v
      W30[j + 1] = h[c30 + j] + v
    end
    return W7, W30
  end
  -- A late event in a past day: applied to that day (if still kept) and to the caches that
  -- cover it; its own windows are computed as of its day from the stored days.
  if d >= newest - L.keep_days then
    local ring, at = L.ring(st)
    local day = ring_get(L, ring, at, d)
    for j = 1, nv do
      local was = day[j]
      day[j] = mmin(was + vals[j], max[j])
      local added = day[j] - was
      if d >= newest - 29 then
        h[c30 + j - 1] = h[c30 + j - 1] + added
      end
      if d >= newest - 6 then
        h[c7 + j - 1] = h[c7 + j - 1] + added
      end
    end
    ring_put(st, L, d, day, 1)
  end
  for j = 1, nv do
    W7[j], W30[j] = 0, 0
  end
  local ring, at = L.ring(st)
  if ring then
    for k = d - 29, d do
      ring_add(L, ring, at, k, W30, 1, 1)
      if k >= d - 6 then
        ring_add(L, ring, at, k, W7, 1, 1)
      end
    end
  end
  return W7, W30
end

----------------------------------------------------------------------------------------------
-- Dedupe memory: a FIFO (by arrival) of entries {8-byte event-id hash, stamp, record}, kept in
-- the state blob as a raw string, where stamp is the entity's newest event time when the event
-- arrived and record the packed features returned for it. An id is forgotten once DEDUPE_CAP
-- newer ids arrived, or once the entity's newest event time is DEDUPE_SPAN_MS past its stamp -
-- but never by the call that added it: a call is the unit that is retried (an outage cut the
-- pipeline, a scorer died before its scored records were written), so however many events of
-- one entity a batch holds, its retry finds every one of them (the store never splits one
-- entity's ops of a batch over two calls). The sizing - what must be remembered, for how
-- long - is in docs/context.md, "Idempotency".
-- Event time, not wall clock, so that a replay makes exactly the dedupe decisions live traffic
-- made, and a fast replay does not remember its whole history; redelivery repeats the
-- uncommitted tail of a partition, whose events are the entity's latest arrivals, well within a
-- day of event time unless traffic is so sparse that a batch spans days. A quiet entity
-- remembers a few events, so the blob stays small. Lookups are a plain substring search
-- (C speed) checked for entry alignment. (Keeping the records in a separate hash was
-- measured: an HSET, an HDEL and a PEXPIRE per event cost more than a few records in the blob.)

-- Redis' Lua hashes every byte of every string it creates (~1.1 us per KiB on the benchmark
-- machine: GET results, string.sub, .., struct.pack), so the FIFO is never copied out of the
-- blob or assembled into intermediate strings: the stored entries are searched in place in the
-- blob read by load_state (from fifo_pos to fifo_end), new ones are kept as their parts (flat
-- array: id hash, stamp, record; from fifo_a on), and save_state's single concatenation takes
-- the kept stored range and the new parts.

-- `newest` is the entity's newest event time when its state was loaded: the only time the
-- FIFO is pruned against (fifo_prune). Pruning against the newest time *after* this call's
-- events would let events of one batch push each other out: a batch that an outage cut
-- half-way is retried whole, and if its applied half moved the entity's newest time more
-- than DEDUPE_SPAN_MS past one of its earlier events, that event was no longer remembered
-- and was counted twice (a clean-clone CI run of the Redis-outage test, 2026-12-02).
local function fifo_load(st, raw, pos, n, width, newest)
  st.fifo_prune_at = newest
  st.fifo_raw = raw
  st.fifo_pos = pos
  st.fifo_end = pos + n * width
  st.fifo_add = {}
  st.fifo_a = 1
  st.fifo_n = n
  st.fifo_w = width
end

local function fifo_push(st, idh, stamp, record)
  local add = st.fifo_add
  local m = #add
  add[m + 1], add[m + 2], add[m + 3] = idh, stamp, record
  st.fifo_n = st.fifo_n + 1
end

-- The record stored for idh, or nil.
local function fifo_find(st, idh)
  local raw, base, stop, width = st.fifo_raw, st.fifo_pos, st.fifo_end, st.fifo_w
  local from = base
  while true do
    local s = sfind(raw, idh, from, true)
    if not s or s >= stop then
      break
    end
    if (s - base) % width == 0 then
      return ssub(raw, s + 16, s + width - 1)
    end
    from = s + 1
  end
  local add = st.fifo_add
  for i = st.fifo_a, #add, 3 do
    if add[i] == idh then
      return add[i + 2]
    end
  end
  return nil
end

-- Forget stored entries beyond the cap or the span; this call's own entries stay (their stamps
-- are at least the newest time at load, so the span never reaches them either).
local function fifo_prune(st)
  local floor_stamp = st.fifo_prune_at - DEDUPE_SPAN_MS
  local width, raw = st.fifo_w, st.fifo_raw
  while st.fifo_pos < st.fifo_end do
    if st.fifo_n > DEDUPE_CAP or sunpack('<d', raw, st.fifo_pos + 8) < floor_stamp then
      st.fifo_pos = st.fifo_pos + width
      st.fifo_n = st.fifo_n - 1
    else
      break
    end
  end
end

-- Append the FIFO's bytes to the array `parts` (for one table.concat).
local function fifo_encode(st, parts)
  local n = #parts
  if st.fifo_pos < st.fifo_end then
    n = n + 1
    parts[n] = ssub(st.fifo_raw, st.fifo_pos, st.fifo_end - 1)
  end
  local add = st.fifo_add
  for i = st.fifo_a, #add, 3 do
    parts[n + 1], parts[n + 2], parts[n + 3] = add[i], spack('<d', add[i + 1]), add[i + 2]
    n = n + 3
  end
  return parts
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
