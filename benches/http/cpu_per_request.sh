#!/usr/bin/env bash
# CPU time per request of the payments server and of a hyper hello-world server under the same
# tollgate-load client, split into user and kernel time for the server and for the client: read
# from /proc over the middle 3 s of 4.5 s runs (the client's audit at the end is left out). The
# server starts afresh for each run (memory backends); the two alternate ROUNDS times.
#
#   cargo build --release -p payments-server -p tollgate-load
#   benches/http/cpu_per_request.sh            # CONCURRENCY=16 ROUNDS=3
set -euo pipefail
cd "$(dirname "$0")/../.."
CONCURRENCY=${CONCURRENCY:-16}
ROUNDS=${ROUNDS:-3}
SERVER=${SERVER:-target/release/payments-server}
LOAD=target/release/tollgate-load
SERVER_PORT=${SERVER_PORT:-18090}
HELLO_PORT=${HELLO_PORT:-18091}
work=$(mktemp -d)
cat >"$work/server.toml" <<TOML
[processor]
latency = "0s"
simulated_charges = "memory"
[[policy]]
name = "global"
scope = "global"
algorithm = "sliding-window"
limit = 10000000
window = "60s"
TOML
keys=$("$LOAD" --users 16 --print-api-keys)
"$LOAD" --serve-hello 127.0.0.1:$HELLO_PORT >/dev/null 2>&1 &
hello=$!
server=
cleanup() {
  kill $hello $server 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
ticks=$(getconf CLK_TCK)
times() { awk '{print $14, $15}' "/proc/$1/stat"; }
# measure PID PORT LABEL: one 4.5 s run, CPU of PID and of the client over its middle 3 s.
measure() {
  "$LOAD" --url "http://127.0.0.1:$2" --duration 4500ms --concurrency "$CONCURRENCY" \
    --users 16 >"$work/load.log" 2>&1 &
  local client=$!
  sleep 0.75
  local p0 c0 p1 c1
  p0=$(times "$1"); c0=$(times $client)
  sleep 3
  p1=$(times "$1"); c1=$(times $client)
  wait $client || true # the audit fails against hello-world, which stores nothing
  local rate
  rate=$(grep -oP '^\s*\K[0-9.]+(?= requests/s)' "$work/load.log" | head -1)
  awk -v label="$3" -v rate="$rate" -v t="$ticks" -v p0="$p0" -v p1="$p1" -v c0="$c0" -v c1="$c1" '
    BEGIN {
      split(p0, a); split(p1, b); split(c0, c); split(c1, d); n = rate * 3 * t / 1e6
      printf "%-11s %7.0f req/s  process user %5.1f kernel %5.1f  client user %5.1f kernel %5.1f  (us per request)\n",
        label, rate, (b[1] - a[1]) / n, (b[2] - a[2]) / n, (d[1] - c[1]) / n, (d[2] - c[2]) / n
    }'
}
until curl -s -o /dev/null "http://127.0.0.1:$HELLO_PORT/"; do sleep 0.1; done
for _ in $(seq "$ROUNDS"); do
  TOLLGATE_CONFIG="$work/server.toml" API_KEYS=$keys BIND_ADDR=127.0.0.1:$SERVER_PORT \
    LOG_LEVEL=warn "$SERVER" >/dev/null 2>&1 &
  server=$!
  until curl -s -o /dev/null "http://127.0.0.1:$SERVER_PORT/"; do sleep 0.1; done
  measure $server $SERVER_PORT server
  kill $server; wait $server 2>/dev/null || true; server=
  measure $hello $HELLO_PORT hello-world
done
