//! The Lua script the Redis backend runs: the same arithmetic as `algorithm/`, in one call.
//!
//! Redis Lua numbers are doubles. Every policy is validated so that intermediate values stay
//! below 2^53, where doubles hold integers exactly; `floordiv` corrects the one place (division)
//! where rounding could still creep in, and stored numbers are written with `%d` because Lua's
//! `tostring` keeps only 14 significant digits.

/// `DECIDE`: decide, consume or refund a request's keys atomically.
///
/// - `KEYS[i]`: the Redis key of policy key `i` (prefix + `{policy:subject}`).
/// - `ARGV[1]`: mode: `0` check (consume if every key admits), `1` peek, `2` refund.
/// - `ARGV[2]`: cost.
/// - `ARGV[3]`: now in µs since the epoch, or `""` to use the server's `TIME` (production).
/// - `ARGV[4 + 3(i−1) ..]`: for key `i`: algorithm (`1` sliding window, `2` sliding log,
///   `3` GCRA) and two parameters: limit and window (µs) for `1` and `2`, emission interval and
///   tolerance (µs) for `3`.
///
/// State: sliding window `"index:current:previous"` (string), sliding log a list of
/// `"timestamp:cost"` (oldest first), GCRA the theoretical arrival time (string). Every write
/// sets an expiry at the instant the state becomes equivalent to no state (a minute later on an
/// injected clock, which Redis's own expiry does not follow).
///
/// Returns `{now, allowed₁, remaining₁, reset_after₁, retry_after₁, …}` (`retry_after = -1` when
/// key `i` admits); a refund returns the same shape, every key admitted, with its status after
/// the refund.
///
/// One GCRA key that is checked or peeked — what most requests send — takes a straight-line
/// path at the top that does the same arithmetic as the general one without its tables and
/// closures: Redis spends about 30 % less CPU on it (`benches/redis/script_cost.sh`), and Redis
/// running scripts one at a time is what bounds a busy limiter.
pub(crate) const DECIDE: &str = r#"
local function floordiv(a, b)
  if b < 1 then b = 1 end
  local q = math.floor(a / b)
  if q * b > a then q = q - 1 elseif (q + 1) * b <= a then q = q + 1 end
  return q
end
local function int(x) return string.format('%d', x) end
local now, keep
if ARGV[3] == '' then
  local t = redis.call('TIME')
  now, keep = tonumber(t[1]) * 1000000 + tonumber(t[2]), 0
else
  -- Redis expires keys on its own clock, which an injected one need not follow: a test's
  -- clock can stand still while Redis's runs on, and state idle in a millisecond by the
  -- injected clock would vanish between two calls. Keep it a minute longer: a state past
  -- its idle instant decides exactly like no state, so the margin changes no answer.
  now, keep = tonumber(ARGV[3]), 60000
end
-- The expiry, in ms, for state that becomes equivalent to no state at `idle_at` (µs).
local function px(idle_at) return int(math.ceil((idle_at - now) / 1000) + keep) end

-- One GCRA key, checked or peeked (the common case): the same arithmetic as below, without
-- building the general path's tables and closures, which cost Redis a third of the call.
if #KEYS == 1 and ARGV[4] == '3' and ARGV[1] ~= '2' then
  local cost, T, tau = tonumber(ARGV[2]), tonumber(ARGV[5]), tonumber(ARGV[6])
  local ok, raw = pcall(redis.call, 'GET', KEYS[1])
  local tat = ok and raw and tonumber(raw)
  local stale = not ok
  if not tat then tat = now end
  local base = tat
  if now > base then base = now end
  local ahead = base - now + cost * T
  local wait, allowed = -1, 1
  if ahead > tau then
    wait, allowed = ahead - tau, 0
  elseif ARGV[1] == '0' then
    tat = base + cost * T
    if stale then redis.call('DEL', KEYS[1]) end
    if tat > now then
      redis.call('SET', KEYS[1], int(tat), 'PX', px(tat))
    else
      redis.call('DEL', KEYS[1])
    end
  end
  ahead = tat - now
  if ahead < 0 then ahead = 0 end
  local free = tau - ahead
  if free < 0 then free = 0 end
  return { now, allowed, floordiv(free, T), ahead, wait }
end

local mode = tonumber(ARGV[1])
local cost = tonumber(ARGV[2])

-- Load and advance every key's state (advancing never changes an answer).
local keys = {}
for i = 1, #KEYS do
  local base = 3 + (i - 1) * 3
  local k = { kind = tonumber(ARGV[base + 1]), a = tonumber(ARGV[base + 2]),
              b = tonumber(ARGV[base + 3]), stale = false }
  if k.kind == 1 then
    local W = k.b
    local ok, raw = pcall(redis.call, 'GET', KEYS[i])
    local idx, cur, prev
    if ok and raw then idx, cur, prev = string.match(raw, '^(%d+):(%d+):(%d+)$') end
    if idx then
      idx, cur, prev = tonumber(idx), tonumber(cur), tonumber(prev)
    else
      k.stale = not ok
      idx, cur, prev = floordiv(now, W), 0, 0
    end
    local nidx = floordiv(now, W)
    if nidx == idx + 1 then prev = cur; cur = 0
    elseif nidx > idx + 1 then prev = 0; cur = 0 end
    if nidx > idx then idx = nidx end
    k.idx, k.cur, k.prev = idx, cur, prev
  elseif k.kind == 2 then
    local ok, raw = pcall(redis.call, 'LRANGE', KEYS[i], 0, -1)
    if not ok then raw = {}; k.stale = true end
    local entries, total, expired = {}, 0, 0
    for _, e in ipairs(raw) do
      local at, c = string.match(e, '^(%d+):(%d+)$')
      at, c = tonumber(at), tonumber(c)
      if at and at + k.b > now then
        entries[#entries + 1] = { at, c }
        total = total + c
      else
        expired = expired + 1
      end
    end
    k.entries, k.total, k.expired = entries, total, expired
  else
    local ok, raw = pcall(redis.call, 'GET', KEYS[i])
    local tat = ok and raw and tonumber(raw)
    if not tat then k.stale = not ok; tat = now end
    k.tat = tat
  end
  keys[i] = k
end

local function elapsed(k)
  local e = now - k.idx * k.b
  if e < 0 then e = 0 elseif e > k.b then e = k.b end
  return e
end

local function admits(k)
  if k.kind == 1 then
    local L, W = k.a, k.b
    local e = elapsed(k)
    if k.prev * (W - e) + (k.cur + cost) * W <= L * W then return -1 end
    if k.cur + cost <= L then
      local q = floordiv((L - k.cur - cost) * W, k.prev)
      local wait = (W - q) - e
      if wait < 1 then wait = 1 end
      return wait
    end
    local q = floordiv((L - cost) * W, k.cur)
    local rest = W - q
    if rest < 0 then rest = 0 end
    return (W - e) + rest
  elseif k.kind == 2 then
    if k.total + cost <= k.a then return -1 end
    local to_free = k.total + cost - k.a
    for _, e in ipairs(k.entries) do
      if e[2] >= to_free then
        local wait = e[1] + k.b - now
        if wait < 1 then wait = 1 end
        return wait
      end
      to_free = to_free - e[2]
    end
    return k.b
  else
    local base = k.tat
    if now > base then base = now end
    local ahead = base - now + cost * k.a
    if ahead <= k.b then return -1 end
    return ahead - k.b
  end
end

local function status(k)
  if k.kind == 1 then
    local L, W = k.a, k.b
    local e = elapsed(k)
    local free = L * W - (k.prev * (W - e) + k.cur * W)
    if free < 0 then free = 0 end
    local reset = 0
    if k.cur > 0 then reset = (W - e) + W elseif k.prev > 0 then reset = W - e end
    return floordiv(free, W), reset
  elseif k.kind == 2 then
    local remaining = k.a - k.total
    if remaining < 0 then remaining = 0 end
    local reset = 0
    local n = #k.entries
    if n > 0 then reset = k.entries[n][1] + k.b - now end
    return remaining, reset
  else
    local ahead = k.tat - now
    if ahead < 0 then ahead = 0 end
    local free = k.b - ahead
    if free < 0 then free = 0 end
    return floordiv(free, k.a), ahead
  end
end

-- Persists a key's state with an expiry at the instant it becomes equivalent to no state.
local function store(i, k)
  if k.stale then redis.call('DEL', KEYS[i]) end
  local idle_at
  if k.kind == 1 then
    if k.cur > 0 then idle_at = (k.idx + 2) * k.b
    elseif k.prev > 0 then idle_at = (k.idx + 1) * k.b
    else idle_at = 0 end
    if idle_at > now then
      redis.call('SET', KEYS[i], int(k.idx) .. ':' .. int(k.cur) .. ':' .. int(k.prev),
        'PX', px(idle_at))
    else
      redis.call('DEL', KEYS[i])
    end
  elseif k.kind == 2 then
    local n = #k.entries
    if k.rewrite or k.stale then
      -- A refund edits the tail: write the whole (at most `limit` entries) log again.
      redis.call('DEL', KEYS[i])
      local items = {}
      for j, e in ipairs(k.entries) do items[j] = int(e[1]) .. ':' .. int(e[2]) end
      for j = 1, n, 1000 do
        redis.call('RPUSH', KEYS[i], unpack(items, j, math.min(j + 999, n)))
      end
    else
      if k.expired > 0 then redis.call('LTRIM', KEYS[i], k.expired, -1) end
      if k.appended then
        redis.call('RPUSH', KEYS[i], int(k.appended[1]) .. ':' .. int(k.appended[2]))
      end
    end
    if n > 0 then
      idle_at = k.entries[n][1] + k.b
      redis.call('PEXPIRE', KEYS[i], px(idle_at))
    end
  else
    if k.tat > now then
      redis.call('SET', KEYS[i], int(k.tat), 'PX', px(k.tat))
    else
      redis.call('DEL', KEYS[i])
    end
  end
end

local function consume(k)
  if k.kind == 1 then
    k.cur = k.cur + cost
  elseif k.kind == 2 then
    local at = now
    local n = #k.entries
    if n > 0 and k.entries[n][1] > at then at = k.entries[n][1] end
    k.entries[n + 1] = { at, cost }
    k.appended = k.entries[n + 1]
    k.total = k.total + cost
  else
    local base = k.tat
    if now > base then base = now end
    k.tat = base + cost * k.a
  end
end

local function refund(k)
  if k.kind == 1 then
    local from_cur = cost
    if k.cur < from_cur then from_cur = k.cur end
    k.cur = k.cur - from_cur
    k.prev = k.prev - (cost - from_cur)
    if k.prev < 0 then k.prev = 0 end
  elseif k.kind == 2 then
    k.rewrite = true
    local left = cost
    while left > 0 and #k.entries > 0 do
      local last = k.entries[#k.entries]
      local take = left
      if last[2] < take then take = last[2] end
      last[2] = last[2] - take
      k.total = k.total - take
      left = left - take
      if last[2] == 0 then k.entries[#k.entries] = nil end
    end
  else
    local floor_tat = now
    if k.tat < floor_tat then floor_tat = k.tat end
    local tat = k.tat - cost * k.a
    if tat < floor_tat then tat = floor_tat end
    k.tat = tat
  end
end

if mode == 2 then
  -- The status after the refund, as an admitted check would report it: a cluster's decision
  -- split per slot reports the groups it refunded this way.
  local reply = { now }
  for i, k in ipairs(keys) do
    refund(k)
    store(i, k)
    local remaining, reset = status(k)
    reply[#reply + 1] = 1
    reply[#reply + 1] = remaining
    reply[#reply + 1] = reset
    reply[#reply + 1] = -1
  end
  return reply
end

local waits, all = {}, true
for i, k in ipairs(keys) do
  waits[i] = admits(k)
  if waits[i] >= 0 then all = false end
end
if mode == 0 and all then
  for i, k in ipairs(keys) do
    consume(k)
    store(i, k)
  end
end
local reply = { now }
for i, k in ipairs(keys) do
  local remaining, reset = status(k)
  local allowed = 1
  if waits[i] >= 0 then allowed = 0 end
  reply[#reply + 1] = allowed
  reply[#reply + 1] = remaining
  reply[#reply + 1] = reset
  reply[#reply + 1] = waits[i]
end
return reply
"#;
