-- Exact sliding 1h and 24h windows over a customer's recent-event log (store.py places this
-- between common.lua and customer.lua).
--
-- The log is a flat array of records (stride LW, sorted by time). An event at or after the
-- customer's newest time (the usual case) slides the windows: records that fell out are
-- subtracted, the new one added - O(1) amortised, however busy the customer. Distinct
-- counterparties, countries and devices are multisets (key -> count). The window state lives
-- only while a script call runs and is rebuilt from the log on an entity's first event of a
-- call. An out-of-order event (older than the newest) is inserted in the middle of the log and
-- computed by a full scan instead, which also drops the sliding state.

-- log record (stride 7): time, amount (US cents), flags, counterparty hash, device hash,
-- country, event-id hash
local LOG_UNIT, LW = 'ddHIIHc8', 7

-- flags (bits 0-6 from ops.py, bit 8 set by customer.lua)
local F_OUT, F_SMALL, F_ECOM, F_RISKY, F_CASH_IN, F_NEAR, F_TRANSFER = 1, 2, 4, 8, 16, 32, 64
local F_CP_NEW = 256

-- Window state: an array (cheaper than named fields in Lua 5.1) of these slots; the multisets
-- (key -> count) are created on first use.
local W_OC24, W_OS24, W_IC24, W_IS24, W_NEWCP24 = 1, 2, 3, 4, 5
local W_NCPS24, W_NCCS, W_NDEVS = 6, 7, 8
local W_OC1, W_OS1, W_SMALL1, W_ECOM1, W_RISKY1, W_NCPS1 = 9, 10, 11, 12, 13, 14
local W_LO24, W_LO1 = 15, 16
local W_CPS24, W_CCS, W_DEVS, W_CPS1 = 17, 18, 19, 20

local function win_new()
  return { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 }
end

-- Multiset insert/remove in slot s of w; return 1 when a key appears/disappears (the distinct
-- count moves).
local function ms_add(w, s, key)
  local set = w[s]
  if not set then
    w[s] = { [key] = 1 }
    return 1
  end
  local n = set[key]
  if n then
    set[key] = n + 1
    return 0
  end
  set[key] = 1
  return 1
end

local function ms_sub(w, s, key)
  local set = w[s]
  local n = set[key]
  if n == 1 then
    set[key] = nil
    return 1
  end
  set[key] = n - 1
  return 0
end

local function add24(w, log, k)
  local f, a = log[k + 2], log[k + 1]
  if band(f, F_OUT) ~= 0 then
    w[W_OC24], w[W_OS24] = w[W_OC24] + 1, w[W_OS24] + a
  else
    w[W_IC24], w[W_IS24] = w[W_IC24] + 1, w[W_IS24] + a
  end
  w[W_NCPS24] = w[W_NCPS24] + ms_add(w, W_CPS24, log[k + 3])
  w[W_NCCS] = w[W_NCCS] + ms_add(w, W_CCS, log[k + 5])
  local dv = log[k + 4]
  if dv ~= 0 then
    w[W_NDEVS] = w[W_NDEVS] + ms_add(w, W_DEVS, dv)
  end
  if f >= F_CP_NEW then
    w[W_NEWCP24] = w[W_NEWCP24] + 1
  end
end

local function sub24(w, log, k)
  local f, a = log[k + 2], log[k + 1]
  if band(f, F_OUT) ~= 0 then
    w[W_OC24], w[W_OS24] = w[W_OC24] - 1, w[W_OS24] - a
  else
    w[W_IC24], w[W_IS24] = w[W_IC24] - 1, w[W_IS24] - a
  end
  w[W_NCPS24] = w[W_NCPS24] - ms_sub(w, W_CPS24, log[k + 3])
  w[W_NCCS] = w[W_NCCS] - ms_sub(w, W_CCS, log[k + 5])
  local dv = log[k + 4]
  if dv ~= 0 then
    w[W_NDEVS] = w[W_NDEVS] - ms_sub(w, W_DEVS, dv)
  end
  if f >= F_CP_NEW then
    w[W_NEWCP24] = w[W_NEWCP24] - 1
  end
end

local function add1(w, log, k)
  local f = log[k + 2]
  if band(f, F_OUT) ~= 0 then
    w[W_OC1], w[W_OS1] = w[W_OC1] + 1, w[W_OS1] + log[k + 1]
  end
  w[W_NCPS1] = w[W_NCPS1] + ms_add(w, W_CPS1, log[k + 3])
  if f % 16 >= 2 then -- any of small (2), e-commerce (4), risky (8)
    if band(f, F_SMALL) ~= 0 then
      w[W_SMALL1] = w[W_SMALL1] + 1
    end
    if band(f, F_ECOM) ~= 0 then
      w[W_ECOM1] = w[W_ECOM1] + 1
    end
    if band(f, F_RISKY) ~= 0 then
      w[W_RISKY1] = w[W_RISKY1] + 1
    end
  end
end

local function sub1(w, log, k)
  local f = log[k + 2]
  if band(f, F_OUT) ~= 0 then
    w[W_OC1], w[W_OS1] = w[W_OC1] - 1, w[W_OS1] - log[k + 1]
  end
  w[W_NCPS1] = w[W_NCPS1] - ms_sub(w, W_CPS1, log[k + 3])
  if f % 16 >= 2 then
    if band(f, F_SMALL) ~= 0 then
      w[W_SMALL1] = w[W_SMALL1] - 1
    end
    if band(f, F_ECOM) ~= 0 then
      w[W_ECOM1] = w[W_ECOM1] - 1
    end
    if band(f, F_RISKY) ~= 0 then
      w[W_RISKY1] = w[W_RISKY1] - 1
    end
  end
end

-- Windows ending at t over the log's records from index `from` on whose time is <= t, with
-- the first index of each window (for later slides).
local function win_scan(log, from, t)
  local w = win_new()
  local lo24, lo1 = t - DAY_MS, t - HOUR_MS
  local k = from
  local n = #log
  while k <= n and log[k] <= lo24 do
    k = k + LW
  end
  w[W_LO24] = k
  while k <= n and log[k] <= lo1 do
    if log[k] <= t then
      add24(w, log, k)
    end
    k = k + LW
  end
  w[W_LO1] = k
  while k <= n do
    if log[k] <= t then
      add24(w, log, k)
      add1(w, log, k)
    end
    k = k + LW
  end
  return w
end

-- Slide windows (built for an end <= t) to end at t, then add the record at index k, which
-- was just appended (its time t is the newest).
local function win_slide(w, log, t, k)
  local lo24, lo1 = t - DAY_MS, t - HOUR_MS
  local i = w[W_LO24]
  while i < k and log[i] <= lo24 do
    sub24(w, log, i)
    i = i + LW
  end
  w[W_LO24] = i
  i = w[W_LO1]
  while i < k and log[i] <= lo1 do
    sub1(w, log, i)
    i = i + LW
  end
  w[W_LO1] = i
  add24(w, log, k)
  add1(w, log, k)
end

-- The record at index k leaves the log (pruned by the cap): it leaves the windows too.
local function win_drop(w, log, k)
  if k >= w[W_LO24] then
    sub24(w, log, k)
    w[W_LO24] = k + LW
  end
  if k >= w[W_LO1] then
    sub1(w, log, k)
    w[W_LO1] = k + LW
  end
end

-- The log was compacted: its records moved `shift` places towards the front.
local function win_rebase(w, shift)
  w[W_LO24], w[W_LO1] = w[W_LO24] - shift, w[W_LO1] - shift
end

-- The window figures of the customer record, in its order (sums in dollars), and out/in.
local function win_figures(w)
  local out_in = -1
  if w[W_IS24] > 0 then
    out_in = w[W_OS24] / w[W_IS24]
  end
  return w[W_OC1], w[W_OS1] / 100, w[W_OC24], w[W_OS24] / 100, w[W_IC24], w[W_IS24] / 100,
    w[W_NCPS1], w[W_NCPS24], w[W_NCCS], w[W_NDEVS], w[W_NEWCP24],
    w[W_SMALL1], w[W_ECOM1], w[W_RISKY1], out_in
end

-- Newest record times before index `skip` (exclusive of it) at or before t: any, and inbound.
local function scan_previous(log, from, t, skip)
  local prev, prev_in = -1, -1
  for k = from, #log, LW do
    local ti = log[k]
    if ti <= t and k ~= skip then
      if ti > prev then
        prev = ti
      end
      if band(log[k + 2], F_OUT) == 0 and ti > prev_in then
        prev_in = ti
      end
    end
  end
  return prev, prev_in
end
