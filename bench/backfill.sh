#!/usr/bin/env bash
# pgshim backfill speed and its cost to live traffic, on one machine, in one run:
#   1. speed, nothing else running: rows/s of one `UPDATE` of the whole table (the
#      reference), of `pgshim backfill` at default settings, and of
#      `pgshim backfill --throttle auto`;
#   2. app traffic: pgbench TPS of a small read/write script on that table, alone and
#      then, in the same pgbench run, while each of the three fills runs, counted from
#      pgbench's per-transaction log over exactly the time the fill ran (so a fill
#      shorter than a pgbench run is not diluted), with how long each fill took.
# Prints a markdown table with the targets and writes bench/out/backfill.md.
#
# Everything runs on 127.0.0.1 in a throwaway cluster that is removed on exit.
#
# Environment:
#   QUICK=1          a quick check: 200000 rows, 4 s pgbench runs
#   ROWS=1000000     rows in the table
#   DURATION=10      seconds pgbench runs alone before each fill starts
#   ROUNDS=3         repeat both parts this many times, the fills in a rotating
#                    order; the tables show medians and list every round's figures
#                    (app TPS alone drifts by 10-20% between runs on a small
#                    machine, and the first write of a freshly loaded table is
#                    slower, which one round cannot tell from a fill's cost)
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
    ROWS=${ROWS:-200000}
    DURATION=${DURATION:-4}
fi
ROWS=${ROWS:-1000000}
DURATION=${DURATION:-10}
CLIENTS=${CLIENTS:-8}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-3}
BATCH_SIZE=${BATCH_SIZE:-}
for v in ROWS DURATION CLIENTS THREADS ROUNDS; do
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
warn_if_busy || true

LOGS="$OUT_DIR/logs"
mkdir -p "$LOGS"
rm -f "$LOGS"/backfill-*
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

# awk arithmetic on the shell's numbers: calc FORMAT EXPR (EXPR reads a, b, c).
calc() {
    awk -v a="${3:-0}" -v b="${4:-0}" -v c="${5:-0}" "BEGIN { printf \"$1\", $2 }"
}

log "creating bench_users with $ROWS rows"
pg_direct -d postgres >"$LOGS/backfill-init.log" 2>&1 <<EOF
CREATE TABLE bench_users (id bigint PRIMARY KEY, name text NOT NULL, balance int NOT NULL DEFAULT 0, full_name text);
INSERT INTO bench_users (id, name) SELECT g, 'user number ' || g FROM generate_series(1, $ROWS) g;
VACUUM ANALYZE bench_users;
EOF

reset_new_column() {
    pg_direct -d postgres -c "UPDATE bench_users SET full_name = NULL" -c "VACUUM bench_users" >/dev/null
}

update_all=(pg_direct -d postgres -c "UPDATE bench_users SET full_name = name WHERE full_name IS NULL")
backfill_default=("$PGSHIM" backfill bench-full-name --config "$CONF" --restart)
[[ -z $BATCH_SIZE ]] || backfill_default+=(--batch-size "$BATCH_SIZE")
backfill_auto=("${backfill_default[@]}" --throttle auto)

# Runs "$@" (after label $1) to the end, logging it; prints its wall-clock seconds.
timed() {
    local label=$1 t0 t1
    shift
    t0=$EPOCHREALTIME
    "$@" >"$LOGS/backfill-$label.log" 2>&1 || { cat "$LOGS/backfill-$label.log" >&2; die "$label failed"; }
    t1=$EPOCHREALTIME
    calc "%.2f" "b - a" "$t0" "$t1"
}

# The median of the numbers given.
median() {
    printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { printf "%s", (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2) }'
}

# The three ways to fill the column. Each round runs each once, in an order that
# rotates from round to round, so a machine whose speed drifts favours none of them.
fills=(update backfill auto)
# The fill that runs $2-th (0, 1, 2) in round $1.
fill_in_round() { echo "${fills[$((($2 + $1 - 1) % 3))]}"; }
# Sets CMD and WHAT for fill $1.
fill_command() {
    case $1 in
        update) CMD=("${update_all[@]}") WHAT="one UPDATE of the whole table" ;;
        backfill) CMD=("${backfill_default[@]}") WHAT="pgshim backfill (default settings)" ;;
        auto) CMD=("${backfill_auto[@]}") WHAT="pgshim backfill --throttle auto" ;;
    esac
}

declare -A alone_secs
for ((r = 1; r <= ROUNDS; r++)); do
    for ((i = 0; i < 3; i++)); do
        fill=$(fill_in_round "$r" "$i")
        fill_command "$fill"
        log "1/2 speed alone, round $r/$ROUNDS: $WHAT"
        reset_new_column
        alone_secs[$fill]+=" $(timed "speed-$fill-r$r" "${CMD[@]}")"
        if [[ $fill == backfill ]]; then
            "$PGSHIM" verify bench-full-name --config "$CONF" >>"$LOGS/backfill-speed-$fill-r$r.log" 2>&1 ||
                { cat "$LOGS/backfill-speed-$fill-r$r.log" >&2; die "verify failed after the backfill"; }
        fi
    done
done
# shellcheck disable=SC2086 # the lists are space-separated numbers
{
    up_secs=$(median ${alone_secs[update]})
    bf_secs=$(median ${alone_secs[backfill]})
    auto_secs=$(median ${alone_secs[auto]})
}

PGB_SCRIPT="$BENCH_TMP/app.sql"
cat >"$PGB_SCRIPT" <<EOF
\set id random(1, $ROWS)
UPDATE bench_users SET balance = balance + 1 WHERE id = :id;
SELECT name, balance FROM bench_users WHERE id = :id;
EOF

# Starts pgbench for $2 seconds in the background, logging every transaction under
# label $1; sets APP_PID.
start_app() {
    local label=$1 secs=$2
    rm -f "$BENCH_TMP/pgb-$label".*
    (cd "$BENCH_TMP" && "$PGBENCH" -n -h 127.0.0.1 -p "$PG_PORT" -U postgres -c "$CLIENTS" -j "$THREADS" \
        -T "$secs" -M prepared -f "$PGB_SCRIPT" -l --log-prefix="pgb-$label" postgres) \
        >"$LOGS/backfill-pgbench-$label.log" 2>&1 &
    APP_PID=$!
    BENCH_EXTRA_PIDS+=("$APP_PID")
}

finish_app() {
    wait "$APP_PID" || { cat "$LOGS/backfill-pgbench-$1.log" >&2; die "pgbench ($1) failed"; }
    forget_pid "$APP_PID"
}

# TPS of the app run $1 over the epoch window [$2, $3], from its transaction log
# (columns 5 and 6: when each transaction ended, seconds and microseconds).
window_tps() {
    cat "$BENCH_TMP/pgb-$1".* | awk -v t0="$2" -v t1="$3" '
        { t = $5 + $6 / 1e6; if (t >= t0 && t <= t1) n++ }
        END { printf "%.0f", (t1 > t0 ? n / (t1 - t0) : 0) }'
}

# Runs one pgbench that first runs alone for DURATION seconds, then while fill $1
# (command "${@:3}") runs: the two windows of the same run sit next to each other,
# so other load on the machine drifting between runs does not skew their ratio.
# pgbench gets $2 seconds in all, which must outlast the fill. Prints
# "tps_alone tps_during fill_seconds".
during() {
    local label=$1 secs=$2 ta t0 t1
    shift 2
    reset_new_column
    ta=$EPOCHREALTIME
    start_app "$label" "$secs"
    sleep $((DURATION + 1))
    t0=$EPOCHREALTIME
    "$@" >"$LOGS/backfill-during-$label.log" 2>&1 || { cat "$LOGS/backfill-during-$label.log" >&2; die "$label under load failed"; }
    t1=$EPOCHREALTIME
    finish_app "$label"
    if (($(calc "%d" "(b > a + c)" "$ta" "$t1" "$secs"))); then
        log "WARNING: $label outlasted pgbench ($secs s): its TPS counts time without traffic"
    fi
    echo "$(window_tps "$label" "$(calc "%.6f" "a + 1" "$ta")" "$t0") $(window_tps "$label" "$t0" "$t1") $(calc "%.2f" "b - a" "$t0" "$t1")"
}

# pgbench must outlast the run alone and then the fill: a generous multiple of the
# fill's time alone.
app_secs() { calc "%d" "b + 1 + a * 8 + 3" "$1" "$DURATION"; }

declare -A alone during load ratio
# shellcheck disable=SC2086 # the lists are space-separated numbers
for ((r = 1; r <= ROUNDS; r++)); do
    for ((i = 0; i < 3; i++)); do
        fill=$(fill_in_round "$r" "$i")
        fill_command "$fill"
        secs=$(median ${alone_secs[$fill]})
        log "2/2 traffic, round $r/$ROUNDS: pgbench alone for $DURATION s, then during $WHAT"
        read -r a d l <<<"$(during "$fill-r$r" "$(app_secs "$secs")" "${CMD[@]}")"
        alone[$fill]+=" $a"
        during[$fill]+=" $d"
        load[$fill]+=" $l"
        ratio[$fill]+=" $(calc "%.3f" "(b > 0 ? a / b : 0)" "$d" "$a")"
    done
done
# shellcheck disable=SC2086 # the lists are space-separated numbers
for fill in "${fills[@]}"; do
    declare "alone_$fill=$(calc "%.0f" "a" "$(median ${alone[$fill]})")"
    declare "tps_$fill=$(calc "%.0f" "a" "$(median ${during[$fill]})")"
    declare "load_$fill=$(median ${load[$fill]})"
    declare "ratio_$fill=$(calc "%.2f" "a" "$(median ${ratio[$fill]})")"
done

rows_per_s() { calc "%.0f" "(b > 0 ? a / b : 0)" "$ROWS" "$1"; }
vs() { calc "%.2f" "(b > 0 ? a / b : 0)" "$1" "$2"; }
up_rate=$(rows_per_s "$up_secs")
bf_rate=$(rows_per_s "$bf_secs")
auto_rate=$(rows_per_s "$auto_secs")
mode="full"
[[ ${QUICK:-0} == 1 ]] && mode="QUICK"

report=$(
    cat <<EOF
# pgshim backfill benchmark ($mode)

pgshim: $PGSHIM_LABEL; $ROWS rows; batch size ${BATCH_SIZE:-default}; $(nproc) CPUs; app: pgbench -c $CLIENTS -j $THREADS (prepared; 1 UPDATE + 1 SELECT by primary key), directly on Postgres.

Medians over $ROUNDS round(s); each fill runs once per round, alone and then under app load, in an order that rotates between rounds.

| fill the new column | alone: s | alone: rows/s | vs one UPDATE | under app load: s | vs default backfill under load | alone: s, each round | under load: s, each round |
|---|---:|---:|---:|---:|---:|---|---|
| one UPDATE of the table | $up_secs | $up_rate | 1.00 | $load_update | $(vs "$load_update" "$load_backfill") |${alone_secs[update]} |${load[update]} |
| pgshim backfill (default) | $bf_secs | $bf_rate | $(vs "$bf_rate" "$up_rate") | $load_backfill | 1.00 |${alone_secs[backfill]} |${load[backfill]} |
| pgshim backfill --throttle auto | $auto_secs | $auto_rate | $(vs "$auto_rate" "$up_rate") | $load_auto | $(vs "$load_auto" "$load_backfill") |${alone_secs[auto]} |${load[auto]} |

The ratio column is the median of each round's own ratio.

| app traffic (pgbench) | TPS alone, just before | TPS during the fill | during vs alone | each round |
|---|---:|---:|---:|---|
| one UPDATE | $alone_update | $tps_update | $ratio_update |${ratio[update]} |
| pgshim backfill (default) | $alone_backfill | $tps_backfill | $ratio_backfill |${ratio[backfill]} |
| pgshim backfill --throttle auto | $alone_auto | $tps_auto | $ratio_auto |${ratio[auto]} |

Targets: default backfill >= 0.60x the rows/s of one UPDATE (here $(vs "$bf_rate" "$up_rate")); with --throttle auto, app TPS >= 0.90x alone (here $ratio_auto) and the fill under load within 2x the unthrottled one (here $(vs "$load_auto" "$load_backfill")x the default backfill under load, $(vs "$load_auto" "$bf_secs")x the default backfill alone).
EOF
)
echo "$report"
echo "$report" >"$OUT_DIR/backfill.md"
echo "markdown: $OUT_DIR/backfill.md; logs: $LOGS/backfill-*.log"
