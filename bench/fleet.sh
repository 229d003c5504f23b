#!/usr/bin/env bash
# A fleet of $INSTANCES simulated pgshim instances on one Postgres: the load
# their heartbeats and version checks put on it, and how long `pgshim flip`
# takes until every one of them has acknowledged a new phase.
#
# How:
#   1. A throwaway cluster on 127.0.0.1, and a config file in database mode
#      ([rules] source = "database") with two rules, loaded into pgshim.rules
#      by the real `pgshim rules push`.
#   2. examples/fleet_sim.rs runs the instances in one process, one connection
#      each, with pgshim's own code for every statement: each LISTENs on the
#      rules channel, beats (its registry row, usage report included) every
#      $INTERVAL seconds, reads the rules version every 2 s, and on a
#      notification reads pgshim.rules, checks the fleet phase guard against the
#      registry and acknowledges with a beat, as `pgshim serve` does. It does
#      not serve clients, check the catalog, or open the extra connections a
#      real reload opens.
#   3. Load: statements/s (pg_stat_statements), transactions/s (pg_stat_database;
#      each prepare counts as one too) and the CPU the cluster's
#      processes used (time on a CPU of the postmaster and its children, from
#      /proc/PID/schedstat), as a share of one core, over $DURATION seconds of
#      beating.
#   4. Convergence: the real `pgshim flip RULE --to PHASE` $FLIPS times
#      (migrate, expand, migrate, ...). For each flip: the wall time of the
#      command (it returns once every live instance acknowledged), the time it
#      reports itself (write to the registry read that saw every acknowledgement;
#      it polls every 100 ms), and from write to the last acknowledgement as the
#      simulator saw it (the write's time is pgshim.rules_version.updated_at).
#      Then min/median/max of each, the extra Postgres CPU a flip cost, and
#      the statements that took the most time during the flips.
#
# Environment:
#   INSTANCES=200   simulated instances (QUICK=1 sets 20)
#   INTERVAL=2      seconds between one instance's beats (pgshim's default)
#   DURATION=30     seconds of beating measured (QUICK=1 sets 6)
#   FLIPS=5         flips measured (QUICK=1 sets 3)
#   PGSHIM_BIN      a built pgshim binary instead of `cargo build --release`
#   FLEET_SIM_BIN   a built fleet_sim example instead of `cargo build --release --example fleet_sim`
set -euo pipefail
source "$(dirname "$0")/lib.sh"

INSTANCES=${INSTANCES:-200}
INTERVAL=${INTERVAL:-2}
DURATION=${DURATION:-30}
FLIPS=${FLIPS:-5}
if [[ -n ${QUICK:-} ]]; then
    INSTANCES=${QUICK_INSTANCES:-20}
    DURATION=6
    FLIPS=3
fi
RULE=users-full-name

check_tools psql cargo bc
build_pgshim
if [[ -n ${FLEET_SIM_BIN:-} ]]; then
    [[ -x $FLEET_SIM_BIN ]] || die "FLEET_SIM_BIN=$FLEET_SIM_BIN is not executable"
    FLEET_SIM=$FLEET_SIM_BIN
else
    log "building the fleet simulator (cargo build --release --example fleet_sim)"
    (cd "$REPO_DIR" && cargo build --release --quiet --example fleet_sim) || die "building examples/fleet_sim.rs failed"
    FLEET_SIM="$REPO_DIR/target/release/examples/fleet_sim"
fi
idle_before=$(idle_percent 1)
make_tmp
install_traps
start_postgres $((INSTANCES + 20))
# Statements are counted by pg_stat_statements (transactions count each
# prepare too, which tokio-postgres sends on a round trip of its own).
echo "shared_preload_libraries = 'pg_stat_statements'" >>"$BENCH_PGDATA/postgresql.conf"
as_pg "$PG_BIN/pg_ctl" -D "$BENCH_PGDATA" -l "$BENCH_TMP/postgres.log" -w -t 60 restart \
    -o "-p $PG_PORT" >/dev/null || die "postgres did not restart with pg_stat_statements"
pg_direct -d postgres -c "CREATE EXTENSION pg_stat_statements" >/dev/null

conf="$BENCH_TMP/fleet.toml"
cat >"$conf" <<EOF
listen = "127.0.0.1:0"

[upstream]
host = "127.0.0.1"
port = $PG_PORT
tls = "disable"
user = "postgres"

[fleet]
database = "postgres"
heartbeat_ms = $((INTERVAL * 1000))

[rules]
source = "database"

[[rule]]
id = "$RULE"
table = "users"
old = "name"
new = "full_name"
phase = "expand"

[[rule]]
id = "orders-status"
table = "orders"
old = "status"
new = "status_code"
phase = "migrate"
[rule.to_new]
status_code = "CASE status WHEN 'pending' THEN 1 WHEN 'paid' THEN 2 END"
[rule.to_old]
status = "CASE status_code WHEN 1 THEN 'pending' WHEN 2 THEN 'paid' END"
EOF
"$PGSHIM" rules push --config "$conf" >"$BENCH_TMP/push.log" 2>&1 ||
    { cat "$BENCH_TMP/push.log" >&2; die "pgshim rules push failed"; }

log "starting $INSTANCES simulated instances"
sim_out="$BENCH_TMP/sim.out"
"$FLEET_SIM" "$conf" "$INSTANCES" >"$sim_out" 2>"$BENCH_TMP/sim.err" &
sim_pid=$!
BENCH_EXTRA_PIDS+=("$sim_pid")
for _ in $(seq 1 600); do
    grep -qx ready "$sim_out" && break
    kill -0 "$sim_pid" 2>/dev/null || { cat "$BENCH_TMP/sim.err" >&2; die "fleet_sim exited"; }
    sleep 0.1
done
grep -qx ready "$sim_out" || { cat "$BENCH_TMP/sim.err" >&2; die "fleet_sim did not get ready in 60 s"; }

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

statements() {
    pg_direct -d postgres -Atc "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements"
}

now_ms() { echo $(($(date +%s%N) / 1000000)); }

# min, median and max of the numbers given, one per line on stdin.
spread() {
    sort -n | awk 'NF { v[++n] = $1 } END { if (n == 0) { print "- | - | -"; exit }
        m = (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
        printf "%d | %d | %d\n", v[1], m, v[n] }'
}

rate=$(echo "scale=2; $INSTANCES / $INTERVAL" | bc)
log "measuring ${DURATION}s of beats ($rate beats/s asked)"
sleep 1
cpu0=$(postgres_cpu_seconds)
c0=$(commits)
s0=$(statements)
t0=$(date +%s.%N)
sleep "$DURATION"
cpu1=$(postgres_cpu_seconds)
c1=$(commits)
s1=$(statements)
t1=$(date +%s.%N)
elapsed=$(echo "$t1 - $t0" | bc)
tps=$(echo "scale=1; ($c1 - $c0) / $elapsed" | bc)
sps=$(echo "scale=1; ($s1 - $s0) / $elapsed" | bc)
cpu_rate=$(echo "scale=5; ($cpu1 - $cpu0) / $elapsed" | bc)
cpu=$(echo "scale=1; 100 * $cpu_rate / 1" | bc)
rows=$(pg_direct -d postgres -Atc "SELECT count(*) FROM pgshim.instance")

# Where the flips' time goes: pg_stat_statements before them, to subtract.
pg_direct -d postgres -c "CREATE TABLE bench_statements AS
    SELECT queryid, calls, total_exec_time FROM pg_stat_statements" >/dev/null

walls=() reported=() acked=()
phase=expand
fcpu0=$(postgres_cpu_seconds)
fs0=$(statements)
ft0=$(date +%s.%N)
for ((i = 1; i <= FLIPS; i++)); do
    if [[ $phase == expand ]]; then phase=migrate; else phase=expand; fi
    start=$(now_ms)
    if ! "$PGSHIM" flip "$RULE" --to "$phase" --timeout 30s --config "$conf" >"$BENCH_TMP/flip.out" 2>"$BENCH_TMP/flip.err"; then
        cat "$BENCH_TMP/flip.out" "$BENCH_TMP/flip.err" >&2
        die "flip $i to $phase did not converge"
    fi
    end=$(now_ms)
    out=$(cat "$BENCH_TMP/flip.out")
    version=$(sed -n 's/.*rules version \([0-9]*\).*/\1/p' <<<"$out")
    ms=$(sed -n 's/.*acknowledged in \([0-9]*\) ms.*/\1/p' <<<"$out")
    written=$(pg_direct -d postgres -Atc "SELECT (extract(epoch FROM updated_at) * 1000)::bigint FROM pgshim.rules_version")
    last=""
    for _ in $(seq 1 50); do
        last=$(sed -n "s/^acked version=$version .*last_ack_ms=\([0-9]*\)$/\1/p" "$sim_out")
        [[ -n $last ]] && break
        sleep 0.1
    done
    walls+=($((end - start)))
    reported+=("$ms")
    [[ -n $last ]] && acked+=($((last - written)))
    log "flip $i to $phase: ${walls[-1]} ms wall, acknowledged in $ms ms (flip's poll), last ack $((${last:-$written} - written)) ms after the write"
    sleep 1
done
fcpu1=$(postgres_cpu_seconds)
fs1=$(statements)
ft1=$(date +%s.%N)
# The flips' CPU beyond what the beats alone would have used in that time.
flip_cpu_ms=$(echo "scale=0; 1000 * (($fcpu1 - $fcpu0) - $cpu_rate * ($ft1 - $ft0)) / $FLIPS" | bc)
flip_statements=$(echo "scale=0; (($fs1 - $fs0) - $sps * ($ft1 - $ft0)) / $FLIPS" | bc)

mkdir -p "$OUT_DIR"
pg_direct -d postgres -F ' | ' -Atc "
    SELECT s.calls - coalesce(b.calls, 0), round((s.total_exec_time - coalesce(b.total_exec_time, 0))::numeric, 1),
           left(regexp_replace(s.query, '\s+', ' ', 'g'), 90)
    FROM pg_stat_statements s LEFT JOIN bench_statements b USING (queryid)
    WHERE s.calls > coalesce(b.calls, 0)
    ORDER BY 2 DESC LIMIT 6" >"$BENCH_TMP/top.txt"
{
    echo "| instances | beat interval | beats/s asked | statements/s | transactions/s | Postgres CPU (% of one core) | registry rows |"
    echo "|---:|---:|---:|---:|---:|---:|---:|"
    echo "| $INSTANCES | ${INTERVAL}s | $rate | $sps | $tps | $cpu | $rows |"
    echo
    echo "| $FLIPS flips, ms | min | median | max |"
    echo "|---|---:|---:|---:|"
    echo "| \`pgshim flip\` wall time | $(printf '%s\n' "${walls[@]}" | spread) |"
    echo "| acknowledged in (flip's report, 100 ms polls) | $(printf '%s\n' "${reported[@]}" | spread) |"
    echo "| write to last acknowledgement (simulator) | $(printf '%s\n' "${acked[@]}" | spread) |"
    echo
    echo "Per flip, beyond the beats: ${flip_statements} statements, ${flip_cpu_ms} ms of Postgres CPU."
    echo
    echo "Statements run during the flips (beats included), by execution time:"
    echo
    echo "| calls | ms | statement |"
    echo "|---:|---:|---|"
    sed 's/^/| /; s/$/ |/' "$BENCH_TMP/top.txt"
    echo
    echo "pgshim $PGSHIM_LABEL, $(nproc) cores${QUICK:+, QUICK}; ${idle_before}% idle before the run."
} | tee "$OUT_DIR/fleet.md"
