#!/usr/bin/env bash
# Reads by a mapped column during a migration: TPS of point lookups, range
# scans and ORDER BY … LIMIT on a ROWS-row table, through pgshim with a rename
# rule in each phase (expand, migrate, contract), for a client written against
# the OLD shape and one written against the NEW shape, in simple and prepared
# protocol modes, as a ratio to the same query sent straight to Postgres on the
# old column, as the application did before the migration (target: >= 0.8 in
# every cell).
#
# How:
#   1. A throwaway cluster on 127.0.0.1 with `accounts(id int primary key,
#      code int)`, code = id, and an index on code. `pgshim plan accounts-code
#      --phase expand --apply` adds account_code and builds its index
#      CONCURRENTLY, as in a real migration. Half of the rows (even ids) are
#      then migrated (account_code = code), as if a backfill were half-way and
#      new writes had set both shapes; VACUUM ANALYZE.
#   2. Per phase, pgshim runs with the rule `code` -> `account_code` in that
#      phase. Before contract, `pgshim backfill` fills the other half and
#      `pgshim verify` checks both shapes agree (contract reads the new column
#      only). At debug level, each query runs once through pgshim per shape and
#      its rows are compared with the direct query on code (a wrong answer
#      stops the benchmark); EXPLAIN ANALYZE of each query, with literals and as
#      a generic prepared plan, and the text pgshim sent to Postgres go to
#      bench/out/migrate_reads-logs/explain-PHASE.txt.
#   3. pgshim is restarted at the normal log level. For each query kind and
#      mode, pgbench runs the direct baseline (code, straight to Postgres) and
#      the old-shape and new-shape scripts through pgshim, back to back, order
#      rotating, so drift in the machine's speed hits all three alike.
#
# The queries (COL = code for the old shape and the baseline, account_code for
# the new shape; every compared value is a single pgbench variable, i.e. a
# literal in simple mode and a $n parameter in prepared mode):
#   point   SELECT id FROM accounts WHERE COL = :id
#   range   SELECT count(*) FROM accounts WHERE COL BETWEEN :lo AND :hi  (hi = lo + 100)
#   order   SELECT id FROM accounts WHERE COL > :lo ORDER BY COL LIMIT 10
#
# Prints the table and writes it to bench/out/migrate_reads.md; pgbench output,
# the scripts, EXPLAIN output and pgshim logs go to bench/out/migrate_reads-logs/.
# Everything listens on 127.0.0.1 only and is stopped and removed on exit.
#
# Environment:
#   ROWS=1000000     rows in accounts (QUICK=1 sets 50000)
#   DURATION=10      seconds per pgbench run (QUICK=1 sets 3)
#   CLIENTS=16       pgbench -c
#   THREADS=2        pgbench -j
#   ROUNDS=1         repeat every run; the table shows medians
#   REFERENCE=1      also run the old-column query through a pgshim without
#                    rules (0: skip), which tells the cost of the proxy hop
#                    from the cost of the rule
#   PHASES="expand migrate contract"   KINDS="point range order"
#   SHAPES="old new"   MODES="simple prepared"
#   PGSHIM_BIN=path  use this binary instead of `cargo build --release`
#   PG_BINDIR=path   PostgreSQL server binaries to use
#   KEEP_TMP=1       keep the scratch directory (cluster, configs) after exit
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

LOG_DIR="$OUT_DIR/migrate_reads-logs"
REPORT="$OUT_DIR/migrate_reads.md"
TARGET_RATIO=0.8
RULE_ID=accounts-code
OLD_COL=code
NEW_COL=account_code

if [[ ${QUICK:-0} == 1 ]]; then
    ROWS=${ROWS:-50000}
    DURATION=${DURATION:-3}
fi
ROWS=${ROWS:-1000000}
DURATION=${DURATION:-10}
CLIENTS=${CLIENTS:-16}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-1}
REFERENCE=${REFERENCE:-1}
read -r -a PHASE_LIST <<<"${PHASES:-expand migrate contract}"
read -r -a KIND_LIST <<<"${KINDS:-point range order}"
read -r -a SHAPE_LIST <<<"${SHAPES:-old new}"
read -r -a MODE_LIST <<<"${MODES:-simple prepared}"

for v in ROWS DURATION CLIENTS THREADS ROUNDS; do
    if ! [[ ${!v} =~ ^[0-9]+$ ]] || ((${!v} == 0)); then
        die "$v must be a positive whole number (got '${!v}')"
    fi
done
((ROWS >= 1000)) || die "ROWS must be at least 1000"
[[ $REFERENCE == 0 || $REFERENCE == 1 ]] || die "REFERENCE must be 0 or 1"
# The phases must come in migration order: the backfill before contract is
# not undone.
prev=-1
for p in "${PHASE_LIST[@]}"; do
    case $p in
        expand) n=0 ;;
        migrate) n=1 ;;
        contract) n=2 ;;
        *) die "unknown phase '$p' (expand, migrate, contract)" ;;
    esac
    ((n > prev)) || die "PHASES must be in migration order, each at most once (got '${PHASE_LIST[*]}')"
    prev=$n
done
for k in "${KIND_LIST[@]}"; do
    [[ $k == point || $k == range || $k == order ]] || die "unknown query kind '$k' (point, range, order)"
done
for s in "${SHAPE_LIST[@]}"; do
    [[ $s == old || $s == new ]] || die "unknown shape '$s' (old, new)"
done
for m in "${MODE_LIST[@]}"; do
    [[ $m == simple || $m == prepared ]] || die "unknown mode '$m' (simple, prepared)"
done

INSTALL_HINT="apt-get install -y postgresql jq"
tools=(psql pgbench timeout awk jq cargo)
if [[ $EUID -eq 0 ]]; then tools+=(runuser); fi
check_tools "${tools[@]}"

install_traps
build_pgshim
make_tmp
mkdir -p "$LOG_DIR"
rm -f "$LOG_DIR"/*

# --- queries ------------------------------------------------------------------

shape_col() {
    if [[ $1 == new ]]; then echo "$NEW_COL"; else echo "$OLD_COL"; fi
}

# query_sql KIND COL FORM: the query of KIND on column COL, with pgbench
# variables (FORM=script), literals (FORM=literal) or $n (FORM=param).
query_sql() {
    local kind=$1 col=$2 form=$3 id lo hi
    case $form in
        script) id=:id lo=:lo hi=:hi ;;
        literal) id=$((ROWS / 2 + 1)) lo=$((ROWS / 2 + 1)) hi=$((ROWS / 2 + 101)) ;;
        param) id='$1' lo='$1' hi='$2' ;;
    esac
    case $kind in
        point) echo "SELECT id FROM accounts WHERE $col = $id" ;;
        range) echo "SELECT count(*) FROM accounts WHERE $col BETWEEN $lo AND $hi" ;;
        order) echo "SELECT id FROM accounts WHERE $col > $lo ORDER BY $col LIMIT 10" ;;
    esac
}

# Arguments of the generic-plan EXPLAIN: PREPARE's types, EXECUTE's values.
param_types() { if [[ $1 == range ]]; then echo "int, int"; else echo "int"; fi; }
param_values() {
    if [[ $1 == range ]]; then echo "$((ROWS / 2 + 1)), $((ROWS / 2 + 101))"; else echo "$((ROWS / 2 + 1))"; fi
}

# Writes the pgbench script of KIND on COL to $BENCH_TMP/KIND-COL.sql.
write_script() {
    local kind=$1 col=$2 f="$BENCH_TMP/$1-$2.sql"
    {
        if [[ $kind == point ]]; then
            echo "\\set id random(1, :rows)"
        else
            echo "\\set lo random(1, :rows)"
            [[ $kind == range ]] && echo "\\set hi :lo + 100"
        fi
        echo "$(query_sql "$kind" "$col" script);"
    } >"$f"
    cp "$f" "$LOG_DIR/script-$kind-$col.sql"
}

# --- pgshim -------------------------------------------------------------------

# write_conf FILE PHASE PORT: a config with the rule in PHASE (none: no rule).
write_conf() {
    cat >"$1" <<EOF
listen = "127.0.0.1:$3"
on_unrewritable = "reject"

[upstream]
host = "127.0.0.1"
port = $PG_PORT
tls = "disable"
user = "postgres"

[limits]
max_connections = 1000
shutdown_timeout_ms = 2000
EOF
    [[ $2 != none ]] || return 0
    cat >>"$1" <<EOF

[[rule]]
id = "$RULE_ID"
database = "bench"
table = "accounts"
old = "$OLD_COL"
new = "$NEW_COL"
phase = "$2"
EOF
}

declare -A SHIM_PID=() SHIM_PORT=() SHIM_LOG=()

# start_shim NAME PHASE LEVEL: pgshim NAME on a fresh port, with the rule in
# PHASE (none: no rule).
start_shim() {
    local name=$1 phase=$2 level=$3 conf="$BENCH_TMP/$1-$2-$3.toml" port pid
    pick_port port
    write_conf "$conf" "$phase" "$port"
    SHIM_LOG[$name]="$BENCH_TMP/pgshim-$name-$phase-$level.log"
    log "starting pgshim '$name' (rule: $phase, log: $level) on 127.0.0.1:$port"
    PGSHIM_LOG=$level "$PGSHIM" --log-format json --config "$conf" serve >"${SHIM_LOG[$name]}" 2>&1 &
    pid=$!
    BENCH_EXTRA_PIDS+=("$pid")
    SHIM_PID[$name]=$pid
    SHIM_PORT[$name]=$port
    if ! wait_port "$port" 15 || ! kill -0 "$pid" 2>/dev/null; then
        tail -n 20 "${SHIM_LOG[$name]}" >&2
        die "pgshim '$name' did not start"
    fi
}

# psql through pgshim; extra arguments follow.
pg_shim() {
    "$PSQL" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "${SHIM_PORT[rule]}" -U postgres -d bench "$@"
}

# pgshim CLI commands (plan, backfill, verify) with the rule in expand.
CLI_CONF="$BENCH_TMP/cli.toml"
shim_cli() {
    "$PGSHIM" --config "$CLI_CONF" "$@"
}

# Runs a command in the background with output to file $1, recorded for
# cleanup, and waits for it.
run_bg() {
    local out=$1 pid rc=0
    shift
    "$@" >"$out" 2>&1 &
    pid=$!
    BENCH_EXTRA_PIDS+=("$pid")
    wait "$pid" || rc=$?
    forget_pid "$pid"
    return "$rc"
}

# --- cluster and data ---------------------------------------------------------

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
log "load average before: $LOAD_BEFORE"
BUSY=0
warn_if_busy || BUSY=1
if awk -v l="${LOAD_BEFORE%% *}" 'BEGIN { exit !(l >= 1) }'; then
    log "WARNING: load average ${LOAD_BEFORE%% *} before the benchmark: other processes will make the figures noisy"
    BUSY=1
fi

start_postgres $((CLIENTS * 2 + 40))
write_conf "$CLI_CONF" expand 1
pg_direct -d postgres -c "CREATE DATABASE bench"
log "creating accounts with $ROWS rows, index on $OLD_COL"
pg_direct -d bench >"$LOG_DIR/setup.log" 2>&1 <<EOF || { cat "$LOG_DIR/setup.log" >&2; die "loading the table failed"; }
CREATE TABLE accounts (id int PRIMARY KEY, $OLD_COL int);
INSERT INTO accounts (id, $OLD_COL) SELECT g, g FROM generate_series(1, $ROWS) g;
CREATE INDEX accounts_${OLD_COL}_idx ON accounts ($OLD_COL);
VACUUM ANALYZE accounts;
EOF
log "pgshim plan $RULE_ID --phase expand --apply"
shim_cli plan "$RULE_ID" --phase expand --apply >>"$LOG_DIR/setup.log" 2>&1 ||
    { tail -n 20 "$LOG_DIR/setup.log" >&2; die "pgshim plan --phase expand --apply failed"; }
log "migrating half of the rows (even ids)"
pg_direct -d bench -c "UPDATE accounts SET $NEW_COL = $OLD_COL WHERE id % 2 = 0" \
    -c "VACUUM ANALYZE accounts" >>"$LOG_DIR/setup.log" 2>&1 ||
    { tail -n 20 "$LOG_DIR/setup.log" >&2; die "migrating half of the rows failed"; }
pg_direct -d bench -c '\d accounts' >>"$LOG_DIR/setup.log" 2>&1 || true

for kind in "${KIND_LIST[@]}"; do
    write_script "$kind" "$OLD_COL"
    write_script "$kind" "$NEW_COL"
done

# Finishes the backfill before contract, which reads the new column only.
finish_backfill() {
    log "pgshim backfill $RULE_ID (the other half), then pgshim verify"
    shim_cli backfill "$RULE_ID" >>"$LOG_DIR/backfill.log" 2>&1 ||
        { tail -n 20 "$LOG_DIR/backfill.log" >&2; die "pgshim backfill failed"; }
    shim_cli verify "$RULE_ID" >>"$LOG_DIR/backfill.log" 2>&1 ||
        { tail -n 20 "$LOG_DIR/backfill.log" >&2; die "pgshim verify failed after the backfill"; }
    pg_direct -d bench -c "VACUUM ANALYZE accounts" >>"$LOG_DIR/backfill.log" 2>&1
}

# --- correctness and EXPLAIN --------------------------------------------------

# inspect PHASE: with pgshim at debug level, checks every query's rows through
# pgshim against the direct query on the old column, and writes EXPLAIN output
# (literal and generic prepared plan) and pgshim's rewritten texts.
inspect() {
    local phase=$1 out="$LOG_DIR/explain-$phase.txt" kind shape col sql want got
    : >"$out"
    {
        echo "# phase $phase: EXPLAIN through pgshim (rule $OLD_COL -> $NEW_COL in $phase), $ROWS rows"
        echo "# literal = simple-protocol form; generic = PREPARE with plan_cache_mode = force_generic_plan,"
        echo "# as pgbench -M prepared ends up with after five executions"
    } >>"$out"
    for kind in "${KIND_LIST[@]}"; do
        sql=$(query_sql "$kind" "$OLD_COL" literal)
        want=$(pg_direct -d bench -At -c "$sql") || die "direct query failed: $sql"
        {
            echo
            echo "## $kind, direct to Postgres (baseline): $sql"
            pg_direct -d bench -c "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) $sql" 2>&1
        } >>"$out"
        for shape in "${SHAPE_LIST[@]}"; do
            col=$(shape_col "$shape")
            sql=$(query_sql "$kind" "$col" literal)
            got=$(pg_shim -At -c "$sql" 2>&1) || { echo "$got" >&2; die "$phase: $kind query fails through pgshim: $sql"; }
            if [[ $got != "$want" ]]; then
                printf 'direct:\n%s\nthrough pgshim:\n%s\n' "$want" "$got" >&2
                die "$phase: pgshim returns other rows than Postgres for $sql"
            fi
            {
                echo
                echo "## $kind, $shape shape, literal: $sql"
                pg_shim -c "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) $sql" 2>&1 || echo "(EXPLAIN failed)"
                echo
                echo "## $kind, $shape shape, generic plan: $(query_sql "$kind" "$col" param)"
                pg_shim 2>&1 <<EOF || echo "(EXPLAIN failed)"
SET plan_cache_mode = force_generic_plan;
PREPARE q($(param_types "$kind")) AS $(query_sql "$kind" "$col" param);
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) EXECUTE q($(param_values "$kind"));
DEALLOCATE q;
EOF
            } >>"$out"
        done
    done
    sleep 0.2
    {
        echo
        echo "# statements as pgshim rewrote them (its debug log)"
        # One line per (original, rewritten) pair, duplicates dropped.
        jq -r '(.fields // .) | select(.message == "statement rewritten")
               | "\(.original)\u0001\(.rewritten)"' <"${SHIM_LOG[rule]}" 2>/dev/null |
            awk '!seen[$0]++' | sed 's/\x01/\n  -> /' || echo "(no rewrites found in the log)"
    } >>"$out"
    log "$phase: rows through pgshim match Postgres; EXPLAIN in $out"
}

# --- measured runs ------------------------------------------------------------

declare -A TPS=() FAILED=()

# measure PHASE KIND MODE TARGET ROUND; TARGET is direct (old column, straight
# to Postgres), norule (old column, through pgshim without rules), old or new
# (that shape through pgshim with the rule).
measure() {
    local phase=$1 kind=$2 mode=$3 target=$4 round=$5 port col key out tps failed
    key="$phase|$kind|$mode|$target"
    out="$LOG_DIR/$phase-$kind-$mode-$target-r$round.log"
    case $target in
        direct)
            port=$PG_PORT
            col=$OLD_COL
            ;;
        norule)
            shim_alive norule
            port=${SHIM_PORT[norule]}
            col=$OLD_COL
            ;;
        *)
            shim_alive rule
            port=${SHIM_PORT[rule]}
            col=$(shape_col "$target")
            ;;
    esac
    if ! run_bg "$out" timeout -k 5 $((DURATION + 300)) "$PGBENCH" -n -M "$mode" -f "$BENCH_TMP/$kind-$col.sql" \
        -D rows="$ROWS" -c "$CLIENTS" -j "$THREADS" -T "$DURATION" -h 127.0.0.1 -p "$port" -U postgres bench; then
        log "pgbench failed ($phase, $kind, $mode, $target): see $out"
        tail -n 5 "$out" >&2
    fi
    tps=$(awk '/^tps = / { v = $3 } END { print v }' "$out")
    failed=$(awk -F': ' '/^number of failed transactions/ { print $2 + 0 }' "$out")
    if [[ -z $tps ]] || [[ ${failed:-0} -gt 0 ]]; then
        FAILED[$key]=1
        tps=${tps:-0}
    fi
    TPS[$key]+="$tps "
    log "$(printf '%-8s %-5s %-8s %-6s %10.1f tps%s' "$phase" "$kind" "$mode" "$target" "$tps" \
        "$([[ ${FAILED[$key]:-0} == 1 ]] && echo '  FAILED')")"
}

median() {
    # shellcheck disable=SC2086 # word splitting of the value list is intended
    printf '%s\n' $1 | sort -g | awk '{ v[NR] = $1 } END {
        if (NR == 0) { print ""; exit }
        if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# --- run ----------------------------------------------------------------------

log "warm-up: 2 s of each query directly against Postgres"
for kind in "${KIND_LIST[@]}"; do
    run_bg "$LOG_DIR/warmup-$kind.log" timeout 120 "$PGBENCH" -n -f "$BENCH_TMP/$kind-$OLD_COL.sql" -D rows="$ROWS" \
        -T 2 -c "$CLIENTS" -j "$THREADS" -h 127.0.0.1 -p "$PG_PORT" -U postgres bench ||
        { cat "$LOG_DIR/warmup-$kind.log" >&2; die "warm-up failed"; }
done

TARGETS=(direct)
if [[ $REFERENCE == 1 ]]; then
    TARGETS+=(norule)
    start_shim norule none info
fi
TARGETS+=("${SHAPE_LIST[@]}")
runs=$((${#PHASE_LIST[@]} * ${#KIND_LIST[@]} * ${#MODE_LIST[@]} * ${#TARGETS[@]} * ROUNDS))
log "measuring: $runs runs of ${DURATION}s, $CLIENTS clients, $THREADS threads, $ROWS rows (~$((runs * (DURATION + 1) / 60 + 1)) min)"
rot=0
for phase in "${PHASE_LIST[@]}"; do
    [[ $phase == contract ]] && finish_backfill
    start_shim rule "$phase" debug
    inspect "$phase"
    stop_shim rule
    start_shim rule "$phase" info
    for ((round = 1; round <= ROUNDS; round++)); do
        for kind in "${KIND_LIST[@]}"; do
            for mode in "${MODE_LIST[@]}"; do
                # Baseline and shapes back to back, the order rotating.
                for ((i = 0; i < ${#TARGETS[@]}; i++)); do
                    measure "$phase" "$kind" "$mode" "${TARGETS[(i + rot) % ${#TARGETS[@]}]}" "$round"
                done
                rot=$((rot + 1))
            done
        done
    done
    stop_shim rule
done
stop_shim norule
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# --- report -------------------------------------------------------------------

ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b + 0 == 0) print "n/a"; else printf "%.3f", a / b }'
}

fmt_tps() {
    if [[ -z $1 ]]; then echo "n/a"; else awk -v t="$1" 'BEGIN { printf (t < 100 ? "%.1f" : "%.0f"), t }'; fi
}

describe() {
    case $1 in
        point) echo "point lookup" ;;
        range) echo "range scan (101 keys)" ;;
        order) echo "ORDER BY … LIMIT 10" ;;
    esac
}

phase_header="$(printf ' %s |' "${PHASE_LIST[@]}")"
phase_rule="$(printf -- '---:|%.0s' "${PHASE_LIST[@]}")"
ratio_rows=()
tps_rows=()
text_rows=()
any_failed=0
below=0
min_ratio=""
# The reference rows (pgshim without rules) are shown but not held to the
# target: they measure the proxy hop, not the rule.
for kind in "${KIND_LIST[@]}"; do
    for shape in "${TARGETS[@]:1}"; do
        for mode in "${MODE_LIST[@]}"; do
            if [[ $shape == norule ]]; then
                md="| $(describe "$kind") | *reference: $OLD_COL through pgshim without rules* | $mode |"
                txt=$(printf '%-6s %-4s %-9s' "$kind" "ref" "$mode")
            else
                md="| $(describe "$kind") | $shape ($(shape_col "$shape")) | $mode |"
                txt=$(printf '%-6s %-4s %-9s' "$kind" "$shape" "$mode")
            fi
            for phase in "${PHASE_LIST[@]}"; do
                k="$phase|$kind|$mode"
                r=$(ratio "$(median "${TPS[$k|$shape]:-}")" "$(median "${TPS[$k|direct]:-}")")
                if [[ $shape == norule ]]; then
                    [[ ${FAILED[$k|$shape]:-0} == 1 ]] && { r="FAILED"; any_failed=1; }
                    md+=" *$r* |"
                    txt+=$(printf ' %14s' "($r)")
                    continue
                fi
                if [[ ${FAILED[$k|$shape]:-0} == 1 || ${FAILED[$k|direct]:-0} == 1 ]]; then
                    md+=" FAILED |"
                    txt+=$(printf ' %14s' "FAILED")
                    any_failed=1
                elif [[ $r == n/a ]] || awk -v r="$r" -v t="$TARGET_RATIO" 'BEGIN { exit !(r < t) }'; then
                    md+=" **$r** ✗ |"
                    txt+=$(printf ' %14s' "$r below")
                    below=$((below + 1))
                else
                    md+=" $r |"
                    txt+=$(printf ' %14s' "$r")
                fi
                if [[ $r != n/a ]] && { [[ -z $min_ratio ]] || awk -v r="$r" -v m="$min_ratio" 'BEGIN { exit !(r < m) }'; }; then
                    min_ratio=$r
                fi
            done
            ratio_rows+=("$md")
            text_rows+=("$txt")
        done
    done
done
for kind in "${KIND_LIST[@]}"; do
    for target in "${TARGETS[@]}"; do
        for mode in "${MODE_LIST[@]}"; do
            if [[ $target == direct ]]; then
                md="| $(describe "$kind") | direct to Postgres ($OLD_COL) | $mode |"
            elif [[ $target == norule ]]; then
                md="| $(describe "$kind") | pgshim without rules ($OLD_COL) | $mode |"
            else
                md="| $(describe "$kind") | pgshim, $target shape ($(shape_col "$target")) | $mode |"
            fi
            for phase in "${PHASE_LIST[@]}"; do
                md+=" $(fmt_tps "$(median "${TPS[$phase|$kind|$mode|$target]:-}")") |"
            done
            tps_rows+=("$md")
        done
    done
done

cpu_model=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)
pg_version=$("$PG_BIN/postgres" --version | awk '{ print $3 }')
params="$ROWS rows, $CLIENTS clients, $THREADS pgbench threads, ${DURATION}s per run, $ROUNDS round(s) (median)"
machine="$(nproc) CPUs ($cpu_model), $(uname -sr); PostgreSQL $pg_version, pgshim ${PGSHIM_LABEL:-n/a}"
noise="load average before: $LOAD_BEFORE (after: $LOAD_AFTER)"
if ((BUSY)); then
    noise+="; WARNING: the machine was busy with other work (builds, tests) when the benchmark started: figures are noisy, repeat with ROUNDS=3 on a quiet machine before drawing conclusions"
fi

mkdir -p "$OUT_DIR"
{
    echo "# pgshim reads by a mapped column: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo
    echo "Rule \`$RULE_ID\`: \`accounts.$OLD_COL\` renamed to \`$NEW_COL\`, both indexed (the new one by \`pgshim plan --phase expand --apply\`)."
    echo "In expand and migrate half of the rows have migrated (even ids); before contract \`pgshim backfill\` fills the rest."
    echo "Queries (COL = $OLD_COL for the old shape and the baseline, $NEW_COL for the new shape):"
    echo
    echo "- point: \`$(query_sql point COL script)\`"
    echo "- range: \`$(query_sql range COL script)\` (hi = lo + 100)"
    echo "- order: \`$(query_sql order COL script)\`"
    echo
    echo "- $params"
    echo "- $machine"
    echo "- $noise"
    echo "- cell = TPS through pgshim / TPS of the same query kind and mode sent straight to Postgres on \`$OLD_COL\` (as the application did in expand, before the migration), measured back to back in the same phase; target >= $TARGET_RATIO, cells below it are marked ✗."
    echo "- In migrate, predicates on the mapped column against a literal or \$n become \`((n IS NULL AND P(o)) OR (n IS NOT NULL AND P(n)))\`, which both indexes serve; \`ORDER BY\` the mapped column reads as the \`CASE\` expression that \`pgshim plan --phase expand\` indexes, and a predicate on the column it orders by is also kept in that form, so the same index bounds the scan."
    if [[ $REFERENCE == 1 ]]; then
        echo "- *reference* rows: the old-shape query through a second pgshim without rules, over direct; the part of every other cell that is the proxy hop itself, not the rule (not held to the target)."
    fi
    echo "- EXPLAIN ANALYZE of every query per phase and the text pgshim sent: \`bench/out/migrate_reads-logs/explain-*.txt\`."
    echo
    echo "| query | client shape | mode |$phase_header"
    echo "|---|---|---|$phase_rule"
    printf '%s\n' "${ratio_rows[@]}"
    echo
    echo "TPS (median):"
    echo
    echo "| query | target | mode |$phase_header"
    echo "|---|---|---|$phase_rule"
    printf '%s\n' "${tps_rows[@]}"
} >"$REPORT"

echo
echo "$params"
echo "$machine"
echo "$noise"
echo
echo "TPS through pgshim / TPS direct on $OLD_COL (target >= $TARGET_RATIO; ref = pgshim without rules)"
printf '%-6s %-4s %-9s' kind shape mode
printf ' %14s' "${PHASE_LIST[@]}"
echo
printf '%s\n' "${text_rows[@]}"
echo
echo "lowest ratio: ${min_ratio:-n/a} (target >= $TARGET_RATIO); $below cell(s) below target"
echo "markdown: $REPORT; pgbench output, EXPLAIN and pgshim logs: $LOG_DIR/"
if ((any_failed)); then
    echo "some runs FAILED (see the logs above)" >&2
    exit 1
fi
