#!/usr/bin/env bash
# Payments per second with PostgreSQL reached three ways, same run, alternating (`ROUNDS`
# times): directly with prepared statements (the default), directly with statements sent
# unnamed, and through PgBouncer in transaction mode (unnamed, as it needs). tollgate-load at
# CONCURRENCY for DURATION each; rate limits out of the way, the simulated processor instant,
# no Redis: the database path alone. Prints each round and
# the ratios to the direct, prepared run.
#
#   cargo build --release -p payments-server -p tollgate-load
#   eval "$(.ci/pgbouncer)"                  # PgBouncer on 127.0.0.1:6433
#   DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres benches/http/pooler.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
CONCURRENCY=${CONCURRENCY:-16}
DURATION=${DURATION:-8s}
ROUNDS=${ROUNDS:-3}
DIRECT=${DATABASE_URL:?set DATABASE_URL to the PostgreSQL itself}
POOLER=${TEST_PGBOUNCER_URL:?run eval "\$(.ci/pgbouncer)" first}
run="pooler$$"
keys=$(target/release/tollgate-load --print-api-keys --users 100)
policies='[[policy]]
name = "per-user"
scope = "user"
algorithm = "sliding-window"
limit = 1000000
window = "60s"'
pids=()
configs=()
start() { # port, database URL, prepared statements
  local config
  config=$(mktemp --suffix=.toml)
  printf '%s\n[processor]\nlatency = "0s"\n[database]\nprepared_statements = %s\n' \
    "$policies" "$3" >"$config"
  configs+=("$config")
  BIND_ADDR=127.0.0.1:$1 LOG_LEVEL=warn API_KEYS=$keys TOLLGATE_CONFIG=$config \
    DATABASE_URL=$2 DATABASE_SCHEMA=$run target/release/payments-server >/dev/null &
  pids+=($!)
  until curl -s -o /dev/null "http://127.0.0.1:$1/health"; do sleep 0.1; done
}
cleanup() {
  kill "${pids[@]}" 2>/dev/null || true
  rm -f "${configs[@]}"
  psql -q "$DIRECT" -c "DROP SCHEMA IF EXISTS $run CASCADE" 2>/dev/null || true
}
trap cleanup EXIT
start 18090 "$DIRECT" true
start 18091 "$DIRECT" false
start 18092 "$POOLER" false
rate() {
  target/release/tollgate-load --url "http://127.0.0.1:$1" --users 100 --quiet \
    --concurrency "$CONCURRENCY" --duration "$DURATION" |
    awk '/payments executed\/s/ {print $3}'
}
for _ in $(seq "$ROUNDS"); do
  prepared=$(rate 18090)
  unnamed=$(rate 18091)
  pooled=$(rate 18092)
  echo "direct prepared $prepared, direct unnamed $unnamed, PgBouncer transaction mode $pooled payments/s;" \
    "unnamed $(echo "scale=2; $unnamed / $prepared" | bc)x, PgBouncer $(echo "scale=2; $pooled / $prepared" | bc)x"
done
