#!/usr/bin/env bash
# Redis's own CPU per call (INFO commandstats usec_per_call) for the rate-limit script against
# the scripts that bound it from below: `return 1`, each of the three commands it runs alone, and
# a minimal GCRA script with the same three commands. One GCRA key out of 10 000, 16 clients.
#
#   REDIS_URL=redis://127.0.0.1:6379 benches/redis/script_cost.sh   # flushes nothing; keys bench:*
set -euo pipefail
cd "$(dirname "$0")/../.."
cli() { redis-cli -u "${REDIS_URL:-redis://127.0.0.1:6379}" "$@"; }
cost() {
  local sha
  sha=$(cli script load "$1")
  cli config resetstat >/dev/null
  redis-benchmark -q -n "${CALLS:-100000}" -c 16 -r 10000 \
    $( [ -n "${REDIS_URL:-}" ] && echo -u "$REDIS_URL" ) \
    evalsha "$sha" 1 'bench:{gcra:__rand_int__}' 0 1 '' 3 1000 1000000 >/dev/null 2>&1
  cli info commandstats | sed -n 's/^cmdstat_evalsha:.*usec_per_call=\([0-9.]*\).*/\1/p'
}
decide=$(awk '/pub\(crate\) const DECIDE: &str = r#"/ {on=1; next} on && /^"#;/ {exit} on' \
  crates/tollgate-ratelimit/src/redis/scripts.rs)
minimal='local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call("GET", KEYS[1])) or now
local T, tau, cost = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[2])
if tat < now then tat = now end
local ahead = tat - now + cost * T
if ahead > tau then return {now, 0, 0, 0, ahead - tau} end
tat = tat + cost * T
redis.call("SET", KEYS[1], string.format("%d", tat), "PX", string.format("%d", math.ceil((tat - now) / 1000)))
return {now, 1, 0, 0, -1}'
printf '%-28s %s µs\n' \
  "return 1" "$(cost 'return 1')" \
  "TIME" "$(cost 'redis.call("TIME") return 1')" \
  "GET" "$(cost 'redis.call("GET", KEYS[1]) return 1')" \
  "SET ... PX" "$(cost 'redis.call("SET", KEYS[1], "12345678901234", "PX", "1000") return 1')" \
  "minimal GCRA script" "$(cost "$minimal")" \
  "tollgate's script (GCRA)" "$(cost "$decide")"
