#!/usr/bin/env bash
# Cost of a migration rule: pgbench through pgshim with a rule over
# pgbench_accounts (abalance renamed to balance) against pgshim without rules
# running the already-rewritten SQL, in every phase (expand, migrate,
# contract), for a client written against the OLD shape (abalance) and one
# written against the NEW shape (balance), in simple and prepared protocol
# modes. Also measures the rewrite latency per statement for a cache hit and a
# cache miss from pgshim's own pgshim_rewrite_duration_seconds histogram.
#
# How:
#   1. A throwaway cluster on 127.0.0.1, `pgbench -i -s $SCALE`, then
#      `ALTER TABLE pgbench_accounts ADD COLUMN balance int` and a backfill
#      (`UPDATE pgbench_accounts SET balance = abalance`), so both shapes hold
#      the same data in every phase.
#   2. Per phase, pgshim with the rule and PGSHIM_LOG=debug runs each client
#      script (bench/rules/old.sql, bench/rules/new.sql) once per mode with
#      fixed values; the `statement rewritten` log lines give the exact text
#      pgshim sends to Postgres, turned back into a pgbench script (literals or
#      $n parameters replaced by the script's variables). Those are the
#      baselines, run through a second pgshim with no rules.
#   3. pgshim is restarted at the normal log level; a probe sends
#      $PROBE_STATEMENTS statements per shape whose texts all differ in
#      structure (a distinct table alias each), once (all cache misses) and
#      again (all hits), reading sum/count of the histogram through
#      [admin] /metrics before and after each pass.
#   4. For each shape and mode, pgbench (rule) and pgbench (baseline) run back
#      to back, order alternating, after the same VACUUM/CHECKPOINT done
#      directly against Postgres. The mean rewrite time during the rule run
#      (cache hits under load) comes from the histogram too.
#
# Prints the table and writes it to bench/out/rules.md; pgbench output, the
# derived baseline scripts and pgshim logs go to bench/out/rules-logs/.
# Everything listens on 127.0.0.1 only and is stopped and removed on exit.
#
# Environment:
#   DURATION=10      seconds per pgbench run (QUICK=1 sets 3)
#   CLIENTS=16       pgbench -c
#   THREADS=2        pgbench -j
#   SCALE=10         pgbench -i -s
#   ROUNDS=1         repeat every rule/baseline pair; the table shows medians
#   PHASES="expand migrate contract"   SHAPES="old new"   MODES="simple prepared"
#   PROBE_STATEMENTS=500   distinct statements per shape in the hit/miss probe
#   PGSHIM_BIN=path  use this binary instead of `cargo build --release`
#   PG_BINDIR=path   PostgreSQL server binaries to use
#   KEEP_TMP=1       keep the scratch directory (cluster, configs) after exit
set -euo pipefail

shopt -s extglob

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RULES_DIR="$BENCH_DIR/rules"
LOG_DIR="$OUT_DIR/rules-logs"
REPORT="$OUT_DIR/rules.md"
TARGET_RATIO=0.95

if [[ ${QUICK:-0} == 1 ]]; then
    DURATION=${DURATION:-3}
fi
DURATION=${DURATION:-10}
CLIENTS=${CLIENTS:-16}
THREADS=${THREADS:-2}
SCALE=${SCALE:-10}
ROUNDS=${ROUNDS:-1}
PROBE_STATEMENTS=${PROBE_STATEMENTS:-500}
read -r -a PHASE_LIST <<<"${PHASES:-expand migrate contract}"
read -r -a SHAPE_LIST <<<"${SHAPES:-old new}"
read -r -a MODE_LIST <<<"${MODES:-simple prepared}"

for v in DURATION CLIENTS THREADS SCALE ROUNDS PROBE_STATEMENTS; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a whole number (got '${!v}')"
done
((DURATION > 0 && CLIENTS > 0 && THREADS > 0 && SCALE > 0 && ROUNDS > 0 && PROBE_STATEMENTS > 0)) ||
    die "DURATION, CLIENTS, THREADS, SCALE, ROUNDS and PROBE_STATEMENTS must be positive"
# The probe's two passes must fit in the rewrite cache (4096 entries).
((PROBE_STATEMENTS <= 1000)) || die "PROBE_STATEMENTS must be at most 1000"
for p in "${PHASE_LIST[@]}"; do
    [[ $p == expand || $p == migrate || $p == contract ]] || die "unknown phase '$p'"
done
for s in "${SHAPE_LIST[@]}"; do
    [[ $s == old || $s == new ]] || die "unknown shape '$s' (old, new)"
done
for m in "${MODE_LIST[@]}"; do
    [[ $m == simple || $m == prepared ]] || die "unknown mode '$m' (simple, prepared)"
done

INSTALL_HINT="apt-get install -y postgresql curl jq"
tools=(psql pgbench timeout awk curl jq cargo)
if [[ $EUID -eq 0 ]]; then tools+=(runuser); fi
check_tools "${tools[@]}"
for s in old new; do
    [[ -r $RULES_DIR/$s.sql ]] || die "missing $RULES_DIR/$s.sql"
done

install_traps
build_pgshim
make_tmp
mkdir -p "$LOG_DIR"
rm -f "$LOG_DIR"/*

# --- pgshim instances ---------------------------------------------------------
# lib.sh's start_pgshim has neither rules nor an admin listener, so both
# instances measured here (rule and baseline) are started by start_shim, with
# the same configuration apart from the rule.

declare -A SHIM_PID=() SHIM_PORT=() SHIM_ADMIN=() SHIM_LOG=()

# start_shim NAME PHASE LOGLEVEL: starts pgshim NAME on fresh ports, with the
# rule in PHASE (no rule when PHASE is "none").
start_shim() {
    local name=$1 phase=$2 level=$3 port admin conf="$BENCH_TMP/$1.toml" pid
    pick_port port
    pick_port admin
    cat >"$conf" <<EOF
listen = "127.0.0.1:$port"
on_unrewritable = "reject"

[upstream]
host = "127.0.0.1"
port = $PG_PORT
tls = "disable"
user = "postgres"

[limits]
max_connections = 1000
shutdown_timeout_ms = 2000

[admin]
listen = "127.0.0.1:$admin"
EOF
    if [[ $phase != none ]]; then
        cat >>"$conf" <<EOF

[[rule]]
id = "accounts-balance"
database = "bench"
table = "pgbench_accounts"
old = "abalance"
new = "balance"
phase = "$phase"
EOF
    fi
    log "starting pgshim '$name' (rule: $phase, log: $level) on 127.0.0.1:$port, admin :$admin"
    SHIM_LOG[$name]="$BENCH_TMP/pgshim-$name.log"
    PGSHIM_LOG=$level "$PGSHIM" --log-format json --config "$conf" serve >"${SHIM_LOG[$name]}" 2>&1 &
    pid=$!
    BENCH_EXTRA_PIDS+=("$pid")
    SHIM_PID[$name]=$pid
    SHIM_PORT[$name]=$port
    SHIM_ADMIN[$name]=$admin
    if ! wait_port "$port" 15 || ! wait_port "$admin" 5 || ! kill -0 "$pid" 2>/dev/null; then
        tail -n 20 "${SHIM_LOG[$name]}" >&2
        die "pgshim '$name' did not start"
    fi
}

# Prints "sum count hits misses" of the rewrite histogram and cache counters.
shim_metrics() {
    curl -fsS --max-time 5 "http://127.0.0.1:${SHIM_ADMIN[$1]}/metrics" | awk '
        /^pgshim_rewrite_duration_seconds_sum/ { s = $NF }
        /^pgshim_rewrite_duration_seconds_count/ { c = $NF }
        /^pgshim_rewrite_cache_hits_total/ { h = $NF }
        /^pgshim_rewrite_cache_misses_total/ { m = $NF }
        END { printf "%.9f %d %d %d\n", s + 0, c + 0, h + 0, m + 0 }'
}

# metrics_delta BEFORE AFTER: prints "mean_us count hits misses" between two
# shim_metrics snapshots.
metrics_delta() {
    awk -v a="$1" -v b="$2" 'BEGIN {
        split(a, x, " "); split(b, y, " ")
        n = y[2] - x[2]
        printf "%s %d %d %d\n", (n > 0 ? sprintf("%.2f", (y[1] - x[1]) * 1e6 / n) : "n/a"), n, y[3] - x[3], y[4] - x[4] }'
}

# --- cluster and data ---------------------------------------------------------

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
log "load average before: $LOAD_BEFORE"
BUSY=0
warn_if_busy || BUSY=1
# On a 2-core machine a load average of 1 means another job is using half of it.
if awk -v l="${LOAD_BEFORE%% *}" 'BEGIN { exit !(l >= 1) }'; then
    log "WARNING: load average ${LOAD_BEFORE%% *} before the benchmark: other processes will make the figures noisy"
    BUSY=1
fi

start_postgres $((CLIENTS * 2 + 40))
pg_direct -d postgres -c "CREATE DATABASE bench"
log "pgbench -i -s $SCALE, ADD COLUMN balance, backfill"
timeout 900 "$PGBENCH" -i -q -s "$SCALE" -h 127.0.0.1 -p "$PG_PORT" -U postgres bench \
    >"$LOG_DIR/init.log" 2>&1 || { cat "$LOG_DIR/init.log" >&2; die "pgbench -i failed"; }
pg_direct -d bench -c "ALTER TABLE pgbench_accounts ADD COLUMN balance int" \
    -c "UPDATE pgbench_accounts SET balance = abalance" \
    -c "VACUUM ANALYZE pgbench_accounts" >/dev/null

# --- pgbench ------------------------------------------------------------------

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

# pgbench_shim NAME SCRIPT MODE OUT [pgbench options...]
pgbench_shim() {
    local name=$1 script=$2 mode=$3 out=$4
    shift 4
    run_bg "$out" timeout -k 5 $((DURATION + 120)) "$PGBENCH" -n -M "$mode" -f "$script" \
        -D scale="$SCALE" -h 127.0.0.1 -p "${SHIM_PORT[$name]}" -U postgres "$@" bench
}

# --- baseline scripts from pgshim's own rewrites ------------------------------

# Fixed values the capture scripts use, distinctive enough to be found again in
# the rewritten text.
CAP_AID=918273
CAP_DELTA=4242

# The text pgbench sends for SQL line $2 in mode $1: variables replaced by the
# capture values (simple) or by $1, $2, ... in order of occurrence (prepared).
sent_form() {
    local mode=$1 line=$2 out="" n=0
    if [[ $mode == simple ]]; then
        line=${line//:aid/$CAP_AID}
        echo "${line//:delta/$CAP_DELTA}"
        return
    fi
    while [[ $line =~ ^([^:]*):(aid|delta)(.*)$ ]]; do
        n=$((n + 1))
        out+="${BASH_REMATCH[1]}\$$n"
        line=${BASH_REMATCH[3]}
    done
    echo "$out$line"
}

# Variables of SQL line $1 in order of occurrence, one a line.
line_vars() {
    grep -o ':\(aid\|delta\)\b' <<<"$1" | tr -d : || true
}

# Turns rewritten text $3 (of SQL line $2, mode $1) back into a script line.
# Simple mode: the capture values become the variables again. Prepared mode:
# pgbench numbers each variable occurrence $1, $2, ... in order, so the first
# occurrence of $k (in increasing order) becomes the k-th variable of the line
# and any repeat of $k is left as the literal text `$k`, which pgbench passes
# through: the prepared statement is then byte for byte the one pgshim sends,
# with the same number of parameters.
to_script_form() {
    local mode=$1 line=$2 text=$3 vars k out="" rest seen=0
    if [[ $mode == simple ]]; then
        text=${text//$CAP_AID/:aid}
        echo "${text//$CAP_DELTA/:delta}"
        return
    fi
    mapfile -t vars < <(line_vars "$line")
    rest=$text
    while [[ $rest =~ ^([^$]*)[$]([0-9]+)(.*)$ ]]; do
        out+=${BASH_REMATCH[1]}
        k=${BASH_REMATCH[2]}
        rest=${BASH_REMATCH[3]}
        if ((k == seen + 1 && k <= ${#vars[@]})); then
            out+=":${vars[k - 1]}"
            seen=$k
        else
            out+="\$$k"
        fi
    done
    out+=$rest
    if ((seen != ${#vars[@]})); then
        # Parameters first used out of order: substitute every occurrence
        # (same statement, but pgbench then sends one parameter per use).
        log "note: parameters out of order in '$text'; the baseline repeats them as separate parameters"
        out=$text
        for ((k = ${#vars[@]}; k >= 1; k--)); do
            out=$(sed -E "s/\\\$$k([^0-9]|\$)/:${vars[k - 1]}\\1/g" <<<"$out")
        done
    fi
    echo "$out"
}

strip_sql() {
    local s=$1
    s=${s%%+([[:space:]])}
    s=${s%;}
    s=${s##+([[:space:]])}
    echo "${s%%+([[:space:]])}"
}

# capture PHASE: with pgshim 'capture' running the rule in PHASE at debug
# level, writes $BENCH_TMP/base-PHASE-SHAPE-MODE.sql for every shape and mode.
capture() {
    local phase=$1 shape mode script cap base line sent found rewritten n_rewritten lines_before i
    local -a originals rewrites
    for shape in "${SHAPE_LIST[@]}"; do
        script="$RULES_DIR/$shape.sql"
        cap="$BENCH_TMP/capture-$shape.sql"
        sed -E -e "s/^\\\\set aid .*/\\\\set aid $CAP_AID/" -e "s/^\\\\set delta .*/\\\\set delta $CAP_DELTA/" \
            "$script" >"$cap"
        for mode in "${MODE_LIST[@]}"; do
            lines_before=$(wc -l <"$BENCH_TMP/capture.log")
            if ! pgbench_shim capture "$cap" "$mode" "$LOG_DIR/capture-$phase-$shape-$mode.log" -c 1 -t 1; then
                cat "$LOG_DIR/capture-$phase-$shape-$mode.log" >&2
                die "the $shape-shape script fails through pgshim in phase $phase ($mode)"
            fi
            sleep 0.2
            originals=()
            rewrites=()
            while IFS= read -r -d '' line; do
                originals+=("$line")
                IFS= read -r -d '' line
                rewrites+=("$line")
            done < <(tail -n +$((lines_before + 1)) "$BENCH_TMP/capture.log" |
                jq -j '(.fields // .) | select(.message == "statement rewritten")
                       | .original, "\u0000", .rewritten, "\u0000"')
            base="$BENCH_TMP/base-$phase-$shape-$mode.sql"
            n_rewritten=0
            {
                echo "-- $shape-shape script as pgshim rewrites it in phase $phase ($mode mode), from its debug log"
                while IFS= read -r line; do
                    if [[ $line == \\* || $line == --* || -z $line ]]; then
                        echo "$line"
                        continue
                    fi
                    sent=$(strip_sql "$(sent_form "$mode" "$line")")
                    found=""
                    for i in "${!originals[@]}"; do
                        if [[ $(strip_sql "${originals[i]}") == "$sent" ]]; then
                            found=$i
                            break
                        fi
                    done
                    if [[ -n $found ]]; then
                        rewritten=$(strip_sql "$(to_script_form "$mode" "$line" "${rewrites[found]}")")
                        echo "$rewritten;"
                        n_rewritten=$((n_rewritten + 1))
                    else
                        echo "$line"
                    fi
                done <"$script"
            } >"$base"
            cp "$base" "$LOG_DIR/"
            if ((n_rewritten != ${#originals[@]})); then
                log "WARNING: $phase/$shape/$mode: pgshim rewrote ${#originals[@]} statement(s) but $n_rewritten matched a script line; the baseline may differ from what pgshim sends"
            fi
            log "baseline $phase/$shape/$mode: $n_rewritten statement(s) rewritten by pgshim"
        done
    done
}

# --- hit/miss probe -----------------------------------------------------------

# Writes $BENCH_TMP/probe-SHAPE.sql: PROBE_STATEMENTS statements (UPDATE and
# SELECT by aid, as in the scripts) whose texts all differ in structure (a
# distinct table alias each), so none shares a cache entry with another, in a
# transaction that is rolled back.
write_probe() {
    local shape=$1 col=abalance i a
    [[ $shape == new ]] && col=balance
    {
        echo "BEGIN;"
        for ((i = 1; i <= PROBE_STATEMENTS; i++)); do
            a="p_${shape}_$i"
            if ((i % 2)); then
                echo "UPDATE pgbench_accounts AS $a SET $col = $a.$col + 1 WHERE $a.aid = $i;"
            else
                echo "SELECT $a.$col FROM pgbench_accounts AS $a WHERE $a.aid = $i;"
            fi
        done
        echo "ROLLBACK;"
    } >"$BENCH_TMP/probe-$shape.sql"
}

declare -A PROBE_MISS=() PROBE_HIT=()

# probe PHASE: runs each shape's probe twice through pgshim 'rule'; the first
# pass misses the cache, the second hits it.
probe() {
    local phase=$1 shape pass m0 m1 d mean n hits misses
    for shape in "${SHAPE_LIST[@]}"; do
        for pass in miss hit; do
            m0=$(shim_metrics rule)
            "$PSQL" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "${SHIM_PORT[rule]}" -U postgres -d bench \
                -f "$BENCH_TMP/probe-$shape.sql" >"$LOG_DIR/probe-$phase-$shape-$pass.log" 2>&1 ||
                { cat "$LOG_DIR/probe-$phase-$shape-$pass.log" >&2; die "probe failed ($phase, $shape shape)"; }
            m1=$(shim_metrics rule)
            d=$(metrics_delta "$m0" "$m1")
            read -r mean n hits misses <<<"$d"
            if [[ $pass == miss ]] && ((misses != n || n != PROBE_STATEMENTS)); then
                log "WARNING: miss pass $phase/$shape: $n rewrites, $misses misses, $hits hits"
            fi
            if [[ $pass == hit ]] && ((hits != n || n != PROBE_STATEMENTS)); then
                log "WARNING: hit pass $phase/$shape: $n rewrites, $hits hits, $misses misses"
            fi
            if [[ $pass == miss ]]; then
                PROBE_MISS[$phase|$shape]="$mean $n $misses"
            else
                PROBE_HIT[$phase|$shape]="$mean $n $hits"
            fi
            log "probe $phase/$shape $pass: $mean µs mean over $n rewrites ($hits hits, $misses misses)"
        done
    done
}

# --- measured runs ------------------------------------------------------------

declare -A TPS=() REW=() HITS=() NREW=() FAILED=()

# Same state before every measured run, done directly so no target pays for it.
reset_tables() {
    pg_direct -d bench -c "VACUUM pgbench_accounts" -c "CHECKPOINT" >/dev/null
}

# measure PHASE SHAPE MODE ROUND TARGET (rule | base)
measure() {
    local phase=$1 shape=$2 mode=$3 round=$4 target=$5 script key out tps failed m0="" m1 d
    local mean n hits misses
    key="$phase|$shape|$mode|$target"
    out="$LOG_DIR/$phase-$shape-$mode-$target-r$round.log"
    if [[ $target == rule ]]; then
        script="$RULES_DIR/$shape.sql"
    else
        script="$BENCH_TMP/base-$phase-$shape-$mode.sql"
    fi
    shim_alive "$target"
    reset_tables
    [[ $target == rule ]] && m0=$(shim_metrics rule)
    if ! pgbench_shim "$target" "$script" "$mode" "$out" -c "$CLIENTS" -j "$THREADS" -T "$DURATION"; then
        log "pgbench failed ($phase, $shape, $mode, $target): see $out"
        tail -n 5 "$out" >&2
    fi
    tps=$(awk '/^tps = / { v = $3 } END { print v }' "$out")
    failed=$(awk -F': ' '/^number of failed transactions/ { print $2 + 0 }' "$out")
    if [[ -z $tps ]] || [[ ${failed:-0} -gt 0 ]]; then
        FAILED[$key]=1
        tps=${tps:-0}
    fi
    TPS[$key]+="$tps "
    if [[ -n $m0 ]]; then
        m1=$(shim_metrics rule)
        d=$(metrics_delta "$m0" "$m1")
        read -r mean n hits misses <<<"$d"
        REW[$key]+="$mean "
        HITS[$key]+="$(awk -v h="$hits" -v n="$n" 'BEGIN { printf "%.1f", (n > 0 ? 100 * h / n : 0) }') "
        NREW[$key]+="$n "
        : "$misses"
    fi
    log "$(printf '%-8s %-3s %-8s %-4s %10.1f tps%s' "$phase" "$shape" "$mode" "$target" "$tps" \
        "$([[ -n $m0 ]] && echo "  rewrite ${mean} µs/stmt over $n")$([[ ${FAILED[$key]:-0} == 1 ]] && echo '  FAILED')")"
}

median() {
    # shellcheck disable=SC2086 # word splitting of the value list is intended
    printf '%s\n' $1 | grep -v '^n/a$' | sort -g | awk '{ v[NR] = $1 } END {
        if (NR == 0) { print ""; exit }
        if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# --- run ----------------------------------------------------------------------

for shape in "${SHAPE_LIST[@]}"; do write_probe "$shape"; done
start_shim base none info

log "warm-up: 2 s select-only directly against Postgres"
run_bg "$LOG_DIR/warmup.log" timeout 60 "$PGBENCH" -n -S -T 2 -c "$CLIENTS" -j "$THREADS" \
    -h 127.0.0.1 -p "$PG_PORT" -U postgres bench || { cat "$LOG_DIR/warmup.log" >&2; die "warm-up failed"; }

runs=$((${#PHASE_LIST[@]} * ${#SHAPE_LIST[@]} * ${#MODE_LIST[@]} * ROUNDS * 2))
log "measuring: $runs runs of ${DURATION}s, $CLIENTS clients, $THREADS threads, scale $SCALE (~$((runs * (DURATION + 3) / 60 + 1)) min)"
pair=0
phase_no=0
for phase in "${PHASE_LIST[@]}"; do
    phase_no=$((phase_no + 1))
    start_shim capture "$phase" debug
    capture "$phase"
    stop_shim capture
    start_shim rule "$phase" info
    probe "$phase"
    for ((round = 1; round <= ROUNDS; round++)); do
        for shape in "${SHAPE_LIST[@]}"; do
            for mode in "${MODE_LIST[@]}"; do
                # Rule and baseline back to back, order alternating, so drift
                # in the machine's speed hits both alike.
                if (((pair + phase_no + round) % 2)); then
                    measure "$phase" "$shape" "$mode" "$round" base
                    measure "$phase" "$shape" "$mode" "$round" rule
                else
                    measure "$phase" "$shape" "$mode" "$round" rule
                    measure "$phase" "$shape" "$mode" "$round" base
                fi
                pair=$((pair + 1))
            done
        done
    done
    stop_shim rule
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# --- report -------------------------------------------------------------------

ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b + 0 == 0) print "n/a"; else printf "%.3f", a / b }'
}

rows=()
text_rows=()
any_failed=0
below=0
min_ratio=""
for phase in "${PHASE_LIST[@]}"; do
    for shape in "${SHAPE_LIST[@]}"; do
        for mode in "${MODE_LIST[@]}"; do
            k="$phase|$shape|$mode"
            t_rule=$(median "${TPS[$k|rule]:-}")
            t_base=$(median "${TPS[$k|base]:-}")
            r=$(ratio "$t_rule" "$t_base")
            rew=$(median "${REW[$k|rule]:-}")
            hit=$(median "${HITS[$k|rule]:-}")
            nrew=$(median "${NREW[$k|rule]:-}")
            flag=""
            if [[ ${FAILED[$k|rule]:-0} == 1 || ${FAILED[$k|base]:-0} == 1 ]]; then
                flag="FAILED"
                any_failed=1
            elif [[ $r == n/a ]] || awk -v r="$r" -v t="$TARGET_RATIO" 'BEGIN { exit !(r < t) }'; then
                flag="below target"
                below=$((below + 1))
            else
                flag="ok"
            fi
            if [[ $r != n/a ]] && { [[ -z $min_ratio ]] || awk -v r="$r" -v m="$min_ratio" 'BEGIN { exit !(r < m) }'; }; then
                min_ratio=$r
            fi
            rows+=("| $phase | $shape ($([[ $shape == old ]] && echo abalance || echo balance)) | $mode | $(printf '%.0f' "${t_rule:-0}") | $(printf '%.0f' "${t_base:-0}") | $r | ${rew:-n/a} | $(printf '%.0f' "${nrew:-0}") | ${hit:-n/a}% | $flag |")
            text_rows+=("$(printf '%-8s %-5s %-8s %10.0f %10.0f %7s %9s %9.0f %7s  %s' "$phase" "$shape" "$mode" \
                "${t_rule:-0}" "${t_base:-0}" "$r" "${rew:-n/a}" "${nrew:-0}" "${hit:-n/a}%" "$flag")")
        done
    done
done

probe_rows=()
probe_text=()
for phase in "${PHASE_LIST[@]}"; do
    for shape in "${SHAPE_LIST[@]}"; do
        read -r miss_us miss_n _ <<<"${PROBE_MISS[$phase|$shape]:-n/a 0 0}"
        read -r hit_us hit_n _ <<<"${PROBE_HIT[$phase|$shape]:-n/a 0 0}"
        probe_rows+=("| $phase | $shape | $miss_us | $hit_us | $miss_n / $hit_n |")
        probe_text+=("$(printf '%-8s %-5s %10s %10s %11s' "$phase" "$shape" "$miss_us" "$hit_us" "$miss_n/$hit_n")")
    done
done

cpu_model=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)
pg_version=$("$PG_BIN/postgres" --version | awk '{ print $3 }')
params="$CLIENTS clients, $THREADS pgbench threads, ${DURATION}s per run, scale $SCALE, $ROUNDS round(s) (median)"
machine="$(nproc) CPUs ($cpu_model), $(uname -sr); PostgreSQL $pg_version, pgshim ${PGSHIM_LABEL:-n/a}"
noise="load average before: $LOAD_BEFORE (after: $LOAD_AFTER)"
if ((BUSY)); then
    noise+="; WARNING: the machine was busy with other work (builds, tests) when the benchmark started: figures are noisy, repeat with ROUNDS=3 on a quiet machine before drawing conclusions"
fi

mkdir -p "$OUT_DIR"
{
    echo "# pgshim rule cost: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo
    echo "Rule \`accounts-balance\`: \`pgbench_accounts.abalance\` renamed to \`balance\` (both columns present, backfilled)."
    echo "Client scripts: \`bench/rules/old.sql\` (abalance) and \`bench/rules/new.sql\` (balance): BEGIN; UPDATE accounts SET col = col + :delta WHERE aid = :aid; SELECT col FROM accounts WHERE aid = :aid; END."
    echo "Baseline: pgshim without rules running the text pgshim with the rule sends to Postgres (taken from its \`statement rewritten\` debug log; scripts in \`bench/out/rules-logs/base-*.sql\`)."
    echo
    echo "- $params"
    echo "- $machine"
    echo "- $noise"
    echo "- ratio = rule TPS / baseline TPS (target >= $TARGET_RATIO); rewrite µs/stmt = mean of pgshim_rewrite_duration_seconds during the rule run (cache hits under load), rewrites = statements pgshim rewrote (or looked up) in that run, hit % = cache hits among them. In prepared mode a statement is rewritten once per connection, at Parse, so its µs/stmt is over a few dozen rewrites and includes the first (missing) lookup. Hit % above 100 comes from pgshim itself: it counts \`pgshim_rewrite_cache_hits_total\` as the change in the shared cache's counter around each lookup, so concurrent sessions' hits are sometimes counted twice."
    echo
    echo "| phase | client shape | mode | rule TPS | baseline TPS | ratio | rewrite µs/stmt | rewrites | cache hit % | |"
    echo "|---|---|---|---:|---:|---:|---:|---:|---:|---|"
    printf '%s\n' "${rows[@]}"
    echo
    echo "Rewrite latency per statement, single client, mean of pgshim_rewrite_duration_seconds over $PROBE_STATEMENTS"
    echo "statements per shape (UPDATE/SELECT by aid, each with a distinct table alias so every text is a"
    echo "distinct cache key): first pass = cache misses, second pass of the same texts = cache hits."
    echo
    echo "| phase | client shape | miss µs | hit µs | rewrites (miss / hit pass) |"
    echo "|---|---|---:|---:|---:|"
    printf '%s\n' "${probe_rows[@]}"
} >"$REPORT"

echo
echo "$params"
echo "$machine"
echo "$noise"
echo
printf '%-8s %-5s %-8s %10s %10s %7s %9s %9s %7s\n' phase shape mode "rule TPS" "base TPS" ratio "µs/stmt" rewrites "hit%"
printf '%s\n' "${text_rows[@]}"
echo
printf '%-8s %-5s %10s %10s %11s\n' phase shape "miss µs" "hit µs" "n miss/hit"
printf '%s\n' "${probe_text[@]}"
echo
echo "lowest ratio: ${min_ratio:-n/a} (target >= $TARGET_RATIO); $below cell(s) below target"
echo "markdown: $REPORT; pgbench output, baseline scripts and pgshim logs: $LOG_DIR/"
if ((any_failed)); then
    echo "some runs FAILED (see the logs above)" >&2
    exit 1
fi
