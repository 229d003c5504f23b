#!/usr/bin/env bash
# Load a fleet's heartbeats put on Postgres: $INSTANCES simulated pgshim
# instances (pgbench clients) each writing its registry row every $INTERVAL
# seconds, as `pgshim serve` does, for $DURATION seconds.
#
# How:
#   1. A throwaway cluster on 127.0.0.1, and one real `pgshim serve`, whose
#      heartbeat creates the registry table (pgshim.instance) in the control
#      database: the simulated beats write the table pgshim itself made.
#   2. pgbench runs bench/fleet/beat.sql (the upsert pgshim's heartbeat sends,
#      with a usage report) on $INSTANCES connections at $INSTANCES/$INTERVAL
#      transactions per second in all (`-R`), each client its own instance id.
#   3. Postgres's load: transactions/s from pg_stat_database, and the CPU its
#      processes used (time on a CPU of the postmaster and its children, from
#      /proc/PID/schedstat, sampled while the beats run), as a share of one core.
#
# Flip convergence is measured by the integration test fleet_rules (three
# instances acknowledge a `pgshim flip` within a second); simulated instances
# cannot apply rules, so this script measures the registry's cost only.
#
# Environment:
#   INSTANCES=200   simulated instances (QUICK=1 sets 50)
#   INTERVAL=2      seconds between one instance's beats (pgshim's default)
#   DURATION=30     seconds of beating (QUICK=1 sets 6)
#   PGSHIM_BIN      a built pgshim binary instead of `cargo build --release`
set -euo pipefail
source "$(dirname "$0")/lib.sh"

INSTANCES=${INSTANCES:-200}
INTERVAL=${INTERVAL:-2}
DURATION=${DURATION:-30}
if [[ -n ${QUICK:-} ]]; then
    INSTANCES=${QUICK_INSTANCES:-50}
    DURATION=6
fi

check_tools psql pgbench cargo bc
build_pgshim
idle_before=$(idle_percent 1)
make_tmp
install_traps
start_postgres $((INSTANCES + 20))
# pgshim's own login, which its heartbeat writes the registry with.
PGSHIM_UPSTREAM_USER=postgres start_pgshim

log "waiting for pgshim's heartbeat to create pgshim.instance"
for _ in $(seq 1 50); do
    if [[ $(pg_direct -d postgres -Atc "SELECT to_regclass('pgshim.instance') IS NOT NULL") == t ]]; then
        break
    fi
    sleep 0.2
done
[[ $(pg_direct -d postgres -Atc "SELECT to_regclass('pgshim.instance') IS NOT NULL") == t ]] \
    || die "pgshim did not create pgshim.instance (see $BENCH_TMP/pgshim.log)"

# CPU seconds used so far by the cluster's backends and helpers, from
# /proc/PID/schedstat (nanoseconds on a CPU; clock ticks are too coarse for
# backends that each run a beat every two seconds).
postgres_cpu_seconds() {
    local postmaster ns=0 pid on_cpu _rest
    postmaster=$(head -1 "$BENCH_PGDATA/postmaster.pid")
    for pid in $postmaster $(ps -o pid= --ppid "$postmaster"); do
        read -r on_cpu _rest <"/proc/$pid/schedstat" 2>/dev/null || continue
        ns=$((ns + on_cpu))
    done
    echo "scale=3; $ns / 1000000000" | bc
}

commits() {
    pg_direct -d postgres -Atc "SELECT xact_commit FROM pg_stat_database WHERE datname = 'postgres'"
}

rate=$(echo "scale=2; $INSTANCES / $INTERVAL" | bc)
log "$INSTANCES simulated instances, one beat each every ${INTERVAL}s ($rate beats/s), for ${DURATION}s"
"$PGBENCH" -n -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres \
    -c "$INSTANCES" -j 2 -R "$rate" -T "$DURATION" \
    -f "$BENCH_DIR/fleet/beat.sql" >"$BENCH_TMP/pgbench.log" 2>&1 &
bench_pid=$!
BENCH_EXTRA_PIDS+=("$bench_pid")
# Sample once every connection is up, and before the first ones end.
sleep 2
cpu0=$(postgres_cpu_seconds)
c0=$(commits)
t0=$(date +%s.%N)
sleep $((DURATION - 3))
cpu1=$(postgres_cpu_seconds)
c1=$(commits)
t1=$(date +%s.%N)
wait "$bench_pid" || { cat "$BENCH_TMP/pgbench.log" >&2; die "pgbench failed"; }
forget_pid "$bench_pid"

elapsed=$(echo "$t1 - $t0" | bc)
tps=$(echo "scale=1; ($c1 - $c0) / $elapsed" | bc)
cpu=$(echo "scale=1; 100 * ($cpu1 - $cpu0) / $elapsed" | bc)
latency=$(grep -E '^latency average' "$BENCH_TMP/pgbench.log" | awk '{print $4}')
rows=$(pg_direct -d postgres -Atc "SELECT count(*) FROM pgshim.instance")

mkdir -p "$OUT_DIR"
{
    echo "| instances | beat interval | beats/s asked | transactions/s | Postgres CPU (% of one core) | beat latency (ms) | registry rows |"
    echo "|---:|---:|---:|---:|---:|---:|---:|"
    echo "| $INSTANCES | ${INTERVAL}s | $rate | $tps | $cpu | $latency | $rows |"
    echo
    echo "pgshim $PGSHIM_LABEL, $(nproc) cores${QUICK:+, QUICK}; ${idle_before}% idle before the run."
} | tee "$OUT_DIR/fleet.md"
