//! The Lua scripts of the Redis store. A record is a hash: `fp`, `state` (`p` in progress, `c`
//! completed, `r` released: reads as absent), `fence`, `lease_until` and `expires_at` (µs), and for completed records `status`,
//! `headers` (JSON) and `body`. Every script reads the server's `TIME` unless ARGV passes a time
//! (tests), treats `expires_at <= now` as absent, and sets `PX` so Redis deletes the record itself
//! (a minute later when the time is passed in, since Redis's clock runs on without it).
//! Fences are `max(previous + 1, now in µs)`: they grow even across a deleted record.

/// `NOW`: the prefix of every script below. Their last ARGV is the time in µs, or `""` for the
/// server's `TIME` (production); `now` is set from it.
pub(crate) const NOW: &str = r#"
local now, linger_ms
if ARGV[#ARGV] == '' then
  local t = redis.call('TIME')
  now, linger_ms = tonumber(t[1]) * 1000000 + tonumber(t[2]), 0
else
  -- Redis expires keys on its own clock, which a passed time need not follow: a test's clock
  -- can stand still while Redis's runs on. Keep records a minute longer; `expires_at` still
  -- decides when a record reads as absent, so the margin changes no answer.
  now, linger_ms = tonumber(ARGV[#ARGV]), 60000
end
"#;

/// `CLAIM` (after [`NOW`]). KEYS[1] record. ARGV: fingerprint (hex), lease ms, ttl ms, now µs or "".
/// Returns `{outcome, fence, retry_after_ms | status, headers, body}` with outcome
/// acquired | resumed | completed | in_progress | mismatch.
pub(crate) const CLAIM: &str = r#"
local function int(x) return string.format('%d', x) end
local lease_us, ttl_ms = tonumber(ARGV[2]) * 1000, tonumber(ARGV[3])
local r = redis.call('HMGET', KEYS[1], 'fp', 'state', 'fence', 'lease_until', 'expires_at',
                     'status', 'headers', 'body')
local fp, state, fence, lease_until, expires_at = r[1], r[2], tonumber(r[3]), tonumber(r[4]), tonumber(r[5])
local function next_fence() return math.max((fence or 0) + 1, now) end

if not state or state == 'r' or not expires_at or expires_at <= now then
  local f = next_fence()
  redis.call('DEL', KEYS[1])
  -- Never expire while the lease is held.
  local keep_ms = math.max(ttl_ms, lease_us / 1000)
  redis.call('HSET', KEYS[1], 'fp', ARGV[1], 'state', 'p', 'fence', int(f),
             'lease_until', int(now + lease_us), 'expires_at', int(now + keep_ms * 1000))
  redis.call('PEXPIRE', KEYS[1], int(keep_ms + linger_ms))
  return {'acquired', f}
end
if fp ~= ARGV[1] then return {'mismatch', 0} end
if state == 'c' then return {'completed', fence, tonumber(r[6]), r[7], r[8]} end
if lease_until > now then return {'in_progress', fence, math.ceil((lease_until - now) / 1000)} end
local f = next_fence()
local keep = math.max(expires_at, now + lease_us)
redis.call('HSET', KEYS[1], 'fence', int(f), 'lease_until', int(now + lease_us),
           'expires_at', int(keep))
redis.call('PEXPIRE', KEYS[1], int(math.ceil((keep - now) / 1000) + linger_ms))
return {'resumed', f}
"#;

/// `COMPLETE` (after [`NOW`]). KEYS[1] record. ARGV: fence, status, headers JSON, body, ttl ms, now µs or "".
/// Returns 1, or 0 when `fence` is not the live owner's.
pub(crate) const COMPLETE: &str = r#"
local r = redis.call('HMGET', KEYS[1], 'state', 'fence', 'expires_at')
if r[1] ~= 'p' or r[2] ~= ARGV[1] or tonumber(r[3]) <= now then return 0 end
local ttl_ms = tonumber(ARGV[5])
redis.call('HSET', KEYS[1], 'state', 'c', 'status', ARGV[2], 'headers', ARGV[3], 'body', ARGV[4],
           'expires_at', string.format('%d', now + ttl_ms * 1000))
redis.call('HDEL', KEYS[1], 'lease_until')
redis.call('PEXPIRE', KEYS[1], string.format('%d', ttl_ms + linger_ms))
return 1
"#;

/// `RELEASE` (after [`NOW`]). KEYS[1] record. ARGV: fence, mode (`0` nothing happened: leave a tombstone that
/// reads as absent; `1` ambiguous: end the lease, keep the record), now µs or "". Returns 1, or
/// 0 when not the owner.
pub(crate) const RELEASE: &str = r#"
local r = redis.call('HMGET', KEYS[1], 'state', 'fence', 'expires_at')
if r[1] ~= 'p' or r[2] ~= ARGV[1] or tonumber(r[3]) <= now then return 0 end
if ARGV[2] == '0' then
  -- A tombstone, not a DEL: it keeps the fence, so a claim in the same microsecond still
  -- gets a larger one. It reads as absent and expires with the record.
  redis.call('HSET', KEYS[1], 'state', 'r')
  redis.call('HDEL', KEYS[1], 'lease_until')
else
  redis.call('HSET', KEYS[1], 'lease_until', string.format('%d', now))
end
return 1
"#;
