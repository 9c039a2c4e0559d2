#!/usr/bin/env bash
# A flood of 429s through the server against a hyper hello-world server, both driven by wrk in
# the same run (alternating, `ROUNDS` times), memory backends unless DATABASE_URL / REDIS_URL are
# set. Prints each pair and the ratio server / hello-world of requests per second.
#
#   cargo build --release -p payments-server -p tollgate-load
#   benches/http/flood.sh                   # CONNECTIONS=16 DURATION=5s ROUNDS=3
#   SERVER=/path/to/other/payments-server benches/http/flood.sh   # another build
#   DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres benches/http/flood.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
CONNECTIONS=${CONNECTIONS:-16}
DURATION=${DURATION:-5s}
ROUNDS=${ROUNDS:-3}
SERVER=${SERVER:-target/release/payments-server}
SERVER_PORT=${SERVER_PORT:-18080}
HELLO_PORT=${HELLO_PORT:-18081}
run="flood$$"
config=$(mktemp --suffix=.toml)
cat >"$config" <<TOML
[[policy]]
name = "payments"
scope = "user"
algorithm = "sliding-window"
limit = 1
window = "1h"
endpoint = "POST /api/v1/payments"
TOML
BIND_ADDR=127.0.0.1:$SERVER_PORT LOG_LEVEL=warn API_KEYS=tollgate-load-key-0:load-user-0 \
  TOLLGATE_CONFIG=$config DATABASE_SCHEMA=$run REDIS_KEY_PREFIX=$run \
  "$SERVER" >/dev/null &
server=$!
target/release/tollgate-load --serve-hello 127.0.0.1:$HELLO_PORT >/dev/null &
hello=$!
cleanup() {
  kill $server $hello 2>/dev/null || true
  rm -f "$config"
  if [ -n "${DATABASE_URL:-}" ] && command -v psql >/dev/null; then
    psql -q "$DATABASE_URL" -c "DROP SCHEMA IF EXISTS $run CASCADE" 2>/dev/null || true
  fi
}
trap cleanup EXIT
for port in $SERVER_PORT $HELLO_PORT; do
  until curl -s -o /dev/null "http://127.0.0.1:$port/"; do sleep 0.1; done
done
rate() { wrk -t1 -c"$CONNECTIONS" -d"$DURATION" -s benches/http/post.lua "$1" | awk '/Requests\/sec/ {print $2}'; }
for _ in $(seq "$ROUNDS"); do
  ours=$(rate "http://127.0.0.1:$SERVER_PORT/api/v1/payments")
  peer=$(rate "http://127.0.0.1:$HELLO_PORT/api/v1/payments")
  echo "server $ours req/s, hello-world $peer req/s, ratio $(echo "scale=2; $ours / $peer" | bc)"
done
# The flood must have been the user's 429s: a key or header the server refuses would measure a
# 401 or a 400 instead, so the run fails unless the same request is refused by the limit.
last=$(curl -s "http://127.0.0.1:$SERVER_PORT/api/v1/payments" -X POST \
  -H 'Authorization: Bearer tollgate-load-key-0' -H 'Content-Type: application/json' \
  -H 'Idempotency-Key: flood-key-00000000' \
  -d '{"amount": "10.00", "currency": "USD", "payment_method": "card", "description": "flood"}' \
  -o /dev/null -w '%{http_code}')
echo "last answer: $last"
[ "$last" = 429 ] || { echo "the flood was not answered 429: post.lua and this script disagree" >&2; exit 1; }
