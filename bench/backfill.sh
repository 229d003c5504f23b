#!/usr/bin/env bash
# pgshim backfill speed and its cost to live traffic, on one machine, in one run:
#   1. rows/s of `pgshim backfill` (default batch size) over a ROWS-row table, next to
#      one `UPDATE` of the whole table doing the same work;
#   2. pgbench TPS of a small read/write script on that table: alone, while the backfill
#      runs, and while the single UPDATE runs (which holds every row lock until it ends).
# Prints a markdown table and writes bench/out/backfill.md.
#
# Everything runs on 127.0.0.1 in a throwaway cluster that is removed on exit.
#
# Environment:
#   ROWS=1000000     rows in the table (QUICK=1 sets 100000)
#   DURATION=10      seconds per pgbench run (QUICK=1 sets 3)
#   CLIENTS=8        pgbench -c
#   THREADS=2        pgbench -j
#   BATCH_SIZE=      pgshim backfill --batch-size (default: pgshim's default)
#   PGSHIM_BIN=path  use this binary instead of `cargo build --release`
#   PG_BINDIR=path   PostgreSQL server binaries to use
#   KEEP_TMP=1       keep the scratch directory (logs, cluster) after exit
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [[ ${QUICK:-0} == 1 ]]; then
    ROWS=${ROWS:-100000}
    DURATION=${DURATION:-3}
fi
ROWS=${ROWS:-1000000}
DURATION=${DURATION:-10}
CLIENTS=${CLIENTS:-8}
THREADS=${THREADS:-2}
BATCH_SIZE=${BATCH_SIZE:-}
for v in ROWS DURATION CLIENTS THREADS; do
    if ! [[ ${!v} =~ ^[0-9]+$ ]] || ((${!v} == 0)); then
        die "$v must be a positive whole number (got '${!v}')"
    fi
done
[[ -z $BATCH_SIZE || $BATCH_SIZE =~ ^[0-9]+$ ]] || die "BATCH_SIZE must be a whole number"

tools=(psql pgbench cargo awk)
if [[ $EUID -eq 0 ]]; then tools+=(runuser); fi
check_tools "${tools[@]}"
install_traps
build_pgshim
make_tmp
start_postgres $((CLIENTS + 20))

LOGS="$OUT_DIR/logs"
mkdir -p "$LOGS"
CONF="$BENCH_TMP/backfill.toml"
cat >"$CONF" <<EOF
[upstream]
host = "127.0.0.1"
port = $PG_PORT
tls = "disable"
user = "postgres"

[[rule]]
id = "bench-full-name"
database = "postgres"
table = "bench_users"
old = "name"
new = "full_name"
phase = "expand"
EOF

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
per_sec() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.0f", (s > 0 ? n / s : 0) }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }

log "creating bench_users with $ROWS rows"
pg_direct -d postgres >"$LOGS/backfill-init.log" 2>&1 <<EOF
CREATE TABLE bench_users (id bigint PRIMARY KEY, name text NOT NULL, balance int NOT NULL DEFAULT 0, full_name text);
INSERT INTO bench_users (id, name) SELECT g, 'user number ' || g FROM generate_series(1, $ROWS) g;
VACUUM ANALYZE bench_users;
EOF

reset_new_column() {
    pg_direct -d postgres -c "UPDATE bench_users SET full_name = NULL" -c "VACUUM bench_users" >/dev/null
}

backfill_args=(backfill bench-full-name --config "$CONF" --restart)
[[ -z $BATCH_SIZE ]] || backfill_args+=(--batch-size "$BATCH_SIZE")

log "1/2 speed: pgshim backfill"
t0=$(now)
"$PGSHIM" "${backfill_args[@]}" >"$LOGS/backfill-run.log" 2>&1 || { cat "$LOGS/backfill-run.log" >&2; die "backfill failed"; }
bf_secs=$(elapsed "$t0" "$(now)")
"$PGSHIM" verify bench-full-name --config "$CONF" >>"$LOGS/backfill-run.log" 2>&1 ||
    { cat "$LOGS/backfill-run.log" >&2; die "verify failed after the backfill"; }

reset_new_column
log "1/2 speed: one UPDATE of the whole table"
t0=$(now)
pg_direct -d postgres -c "UPDATE bench_users SET full_name = name WHERE full_name IS NULL" >/dev/null
up_secs=$(elapsed "$t0" "$(now)")

PGB_SCRIPT="$BENCH_TMP/app.sql"
cat >"$PGB_SCRIPT" <<EOF
\set id random(1, $ROWS)
UPDATE bench_users SET balance = balance + 1 WHERE id = :id;
SELECT name, balance FROM bench_users WHERE id = :id;
EOF

# Runs pgbench for DURATION seconds; prints "tps avg_latency_ms".
pgbench_tps() {
    local out="$LOGS/backfill-pgbench-$1.log"
    "$PGBENCH" -n -h 127.0.0.1 -p "$PG_PORT" -U postgres -c "$CLIENTS" -j "$THREADS" -T "$DURATION" \
        -M prepared -f "$PGB_SCRIPT" postgres >"$out" 2>&1 || { cat "$out" >&2; die "pgbench ($1) failed"; }
    awk '/^tps = / { tps = $3 } /^latency average/ { lat = $4 } END { printf "%.0f %.2f", tps, lat }' "$out"
}

# Runs pgbench while "$@" runs in the background; prints "tps latency".
pgbench_during() {
    local label=$1 pid result
    shift
    "$@" >"$LOGS/backfill-during-$label.log" 2>&1 &
    pid=$!
    BENCH_EXTRA_PIDS+=("$pid")
    result=$(pgbench_tps "$label")
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    forget_pid "$pid"
    echo "$result"
}

reset_new_column
log "2/2 traffic: pgbench alone"
read -r tps_alone lat_alone <<<"$(pgbench_tps alone)"
reset_new_column
log "2/2 traffic: pgbench while pgshim backfill runs"
read -r tps_bf lat_bf <<<"$(pgbench_during backfill "$PGSHIM" "${backfill_args[@]}")"
reset_new_column
log "2/2 traffic: pgbench while one UPDATE of the whole table runs"
read -r tps_up lat_up <<<"$(pgbench_during update pg_direct -d postgres -c "UPDATE bench_users SET full_name = name WHERE full_name IS NULL")"

report=$(
    cat <<EOF
# pgshim backfill benchmark

pgshim: $PGSHIM_LABEL; $ROWS rows; batch size ${BATCH_SIZE:-default}; pgbench -c $CLIENTS -j $THREADS -T $DURATION (prepared; 1 UPDATE + 1 SELECT by primary key).

| fill the new column | seconds | rows/s |
|---|---:|---:|
| pgshim backfill | $bf_secs | $(per_sec "$ROWS" "$bf_secs") |
| one UPDATE of the table | $up_secs | $(per_sec "$ROWS" "$up_secs") |

| app traffic (pgbench) | TPS | avg latency ms | TPS vs alone |
|---|---:|---:|---:|
| alone | $tps_alone | $lat_alone | 1.00 |
| during pgshim backfill | $tps_bf | $lat_bf | $(ratio "$tps_bf" "$tps_alone") |
| during one UPDATE | $tps_up | $lat_up | $(ratio "$tps_up" "$tps_alone") |
EOF
)
echo "$report"
echo "$report" >"$OUT_DIR/backfill.md"
echo "markdown: $OUT_DIR/backfill.md; logs: $LOGS/backfill-*.log"
