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

local function win_new()
  return {
    oc24 = 0, os24 = 0, ic24 = 0, is24 = 0, newcp24 = 0,
    ncps24 = 0, cps24 = {}, nccs = 0, ccs = {}, ndevs = 0, devs = {},
    oc1 = 0, os1 = 0, small1 = 0, ecom1 = 0, risky1 = 0, ncps1 = 0, cps1 = {},
    lo24 = 0, lo1 = 0,
  }
end

-- Multiset insert/remove; return 1 when a key appears/disappears (the distinct count moves).
local function ms_add(set, key)
  local n = set[key]
  if n then
    set[key] = n + 1
    return 0
  end
  set[key] = 1
  return 1
end

local function ms_sub(set, key)
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
    w.oc24, w.os24 = w.oc24 + 1, w.os24 + a
  else
    w.ic24, w.is24 = w.ic24 + 1, w.is24 + a
  end
  w.ncps24 = w.ncps24 + ms_add(w.cps24, log[k + 3])
  w.nccs = w.nccs + ms_add(w.ccs, log[k + 5])
  local dv = log[k + 4]
  if dv ~= 0 then
    w.ndevs = w.ndevs + ms_add(w.devs, dv)
  end
  if f >= F_CP_NEW then
    w.newcp24 = w.newcp24 + 1
  end
end

local function sub24(w, log, k)
  local f, a = log[k + 2], log[k + 1]
  if band(f, F_OUT) ~= 0 then
    w.oc24, w.os24 = w.oc24 - 1, w.os24 - a
  else
    w.ic24, w.is24 = w.ic24 - 1, w.is24 - a
  end
  w.ncps24 = w.ncps24 - ms_sub(w.cps24, log[k + 3])
  w.nccs = w.nccs - ms_sub(w.ccs, log[k + 5])
  local dv = log[k + 4]
  if dv ~= 0 then
    w.ndevs = w.ndevs - ms_sub(w.devs, dv)
  end
  if f >= F_CP_NEW then
    w.newcp24 = w.newcp24 - 1
  end
end

local function add1(w, log, k)
  local f = log[k + 2]
  if band(f, F_OUT) ~= 0 then
    w.oc1, w.os1 = w.oc1 + 1, w.os1 + log[k + 1]
  end
  w.ncps1 = w.ncps1 + ms_add(w.cps1, log[k + 3])
  if band(f, F_SMALL) ~= 0 then
    w.small1 = w.small1 + 1
  end
  if band(f, F_ECOM) ~= 0 then
    w.ecom1 = w.ecom1 + 1
  end
  if band(f, F_RISKY) ~= 0 then
    w.risky1 = w.risky1 + 1
  end
end

local function sub1(w, log, k)
  local f = log[k + 2]
  if band(f, F_OUT) ~= 0 then
    w.oc1, w.os1 = w.oc1 - 1, w.os1 - log[k + 1]
  end
  w.ncps1 = w.ncps1 - ms_sub(w.cps1, log[k + 3])
  if band(f, F_SMALL) ~= 0 then
    w.small1 = w.small1 - 1
  end
  if band(f, F_ECOM) ~= 0 then
    w.ecom1 = w.ecom1 - 1
  end
  if band(f, F_RISKY) ~= 0 then
    w.risky1 = w.risky1 - 1
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
  w.lo24 = k
  while k <= n and log[k] <= lo1 do
    if log[k] <= t then
      add24(w, log, k)
    end
    k = k + LW
  end
  w.lo1 = k
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
  local i = w.lo24
  while i < k and log[i] <= lo24 do
    sub24(w, log, i)
    i = i + LW
  end
  w.lo24 = i
  i = w.lo1
  while i < k and log[i] <= lo1 do
    sub1(w, log, i)
    i = i + LW
  end
  w.lo1 = i
  add24(w, log, k)
  add1(w, log, k)
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
