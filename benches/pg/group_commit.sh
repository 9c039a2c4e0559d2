#!/usr/bin/env bash
# Payments/s with the payment writes grouped (group_commit = 32, the server's default writers, or
# WRITERS), grouped with every write through the writers (group_commit_alone_up_to = 0, shown as
# group_commit=32/0) and each alone (= 1), against
# two single-row commits per payment (tollgate-load --reference pg-commits) in the same run,
# at each concurrency, ROUNDS times, the forms in a new random order each round (on a shared
# machine the order of runs moves the figures by several per cent); then PostgreSQL's CPU per payment at each
# CPU_CONCURRENCY, from the postmaster's own and its reaped backends' CPU time
# (/proc/<pid>/stat), without the reference. Prints one line per run.
#
#   cargo build --release -p payments-server -p tollgate-load
#   benches/pg/group_commit.sh  # CONCURRENCY="1 4 8 16 64" CPU_CONCURRENCY="16 64" ROUNDS=3 DURATION=6s WRITERS=
set -euo pipefail
cd "$(dirname "$0")/../.."
PG=${PG:-"postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"}
REDIS=${REDIS:-redis://127.0.0.1:6379}
CONCURRENCY=${CONCURRENCY:-"1 4 8 16 64"}
CPU_CONCURRENCY=${CPU_CONCURRENCY:-"16 64"}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-6s}
WRITERS=${WRITERS:+--group-commit-writers $WRITERS}
load() {
  # shellcheck disable=SC2086 # WRITERS is a flag and its value, or nothing
  target/release/tollgate-load --spawn target/release/payments-server --database-url "$PG" \
    --redis-url "$REDIS" --duration "$DURATION" --retry-share 0 --duplicate-share 0 --quiet \
    $WRITERS "$@"
}
# The load generator's flags for a form: group_commit, and group_commit_alone_up_to after a /.
form() {
  echo "--group-commit ${1%/*}"
  [[ $1 == */* ]] && echo "--group-commit-alone-up-to ${1#*/}"
  return 0
}
# Clock ticks of CPU PostgreSQL used so far: the postmaster, its live children, and (cutime,
# cstime) every backend it has reaped.
pg_ticks() {
  local postmaster total=0
  postmaster=$(head -n 1 "$(psql "$PG" -Atc 'SHOW data_directory')/postmaster.pid")
  read -r -a f < <(sed 's/^.*) //' "/proc/$postmaster/stat")
  total=$(( f[11] + f[12] + f[13] + f[14] ))
  for child in $(pgrep -P "$postmaster"); do
    read -r -a c < <(sed 's/^.*) //' "/proc/$child/stat" 2>/dev/null) || continue
    total=$(( total + c[11] + c[12] ))
  done
  echo "$total"
}
for round in $(seq 1 "$ROUNDS"); do
  for c in $CONCURRENCY; do
    for group in $(shuf -e 1 32 32/0); do
      # shellcheck disable=SC2046 # form prints flags and their values, one word each
      out=$(load --concurrency "$c" $(form "$group") --reference pg-commits)
      per_s=$(grep -oP '[0-9]+(?= payments executed/s)' <<<"$out")
      ratio=$(grep -oP '= \K[0-9.]+(?=×)' <<<"$out")
      lat=$(grep -oP 'p50 [0-9.]+ .*p99 [0-9.]+' <<<"$out" | sed 's/  p90 [0-9.]*//')
      tx=$(grep -oP '[0-9.]+(?= per payment)' <<<"$out")
      echo "round=$round concurrency=$c group_commit=$group payments/s=$per_s ratio=$ratio $lat tx/payment=$tx"
    done
  done
  for c in $CPU_CONCURRENCY; do
    for group in $(shuf -e 1 32 32/0); do
      before=$(pg_ticks)
      # shellcheck disable=SC2046 # as above
      out=$(load --concurrency "$c" $(form "$group"))
      after=$(pg_ticks)
      payments=$(grep -oP '~\K[0-9]+(?= payments executed)' <<<"$out")
      hz=$(getconf CLK_TCK)
      echo "round=$round cpu concurrency=$c group_commit=$group payments=$payments pg_cpu_us/payment=$(( (after - before) * 1000000 / hz / payments ))"
    done
  done
done
