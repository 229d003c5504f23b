#!/usr/bin/env bash
# pgbench through three targets on one machine, in one run:
#   direct     PostgreSQL itself
#   pgbouncer  PgBouncer (distribution package) in session mode
#   pgshim     pgshim, plaintext upstream
# for the select-only (-S) and TPC-B-like scripts in simple, extended and
# prepared protocol modes. Prints TPS and average latency per target and the
# TPS ratios pgshim/direct and pgshim/pgbouncer; writes bench/out/results.md.
#
# Everything runs on 127.0.0.1 in a throwaway cluster that is removed on exit.
#
# Environment:
#   DURATION=15      seconds per pgbench run (QUICK=1 sets 3)
#   CLIENTS=16       pgbench -c
#   THREADS=2        pgbench -j
#   SCALE=10         pgbench -i -s
#   ROUNDS=1         repeat the whole matrix; the table shows medians
#   WARMUP=3         seconds of select-only warm-up per target before measuring
#   TARGETS="direct pgbouncer pgshim"   subset/order of targets
#   SCRIPTS="select tpcb"               subset of scripts
#   MODES="simple extended prepared"    subset of modes
#   PROFILE=strace|perf  attach `strace -c -f` or `perf record -g` to each proxy
#                    during its runs (slows it down; output in bench/out/profile/)
#   PGSHIM_BIN=path  use this binary instead of `cargo build --release`
#   PG_BINDIR=path   PostgreSQL server binaries to use
#   KEEP_TMP=1       keep the scratch directory (logs, cluster) after exit
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [[ ${QUICK:-0} == 1 ]]; then
    DURATION=${DURATION:-3}
    WARMUP=${WARMUP:-1}
fi
DURATION=${DURATION:-15}
CLIENTS=${CLIENTS:-16}
THREADS=${THREADS:-2}
SCALE=${SCALE:-10}
ROUNDS=${ROUNDS:-1}
WARMUP=${WARMUP:-3}
read -r -a TARGET_LIST <<<"${TARGETS:-direct pgbouncer pgshim}"
read -r -a SCRIPT_LIST <<<"${SCRIPTS:-select tpcb}"
read -r -a MODE_LIST <<<"${MODES:-simple extended prepared}"
PROFILE=${PROFILE:-}

for v in DURATION CLIENTS THREADS SCALE ROUNDS WARMUP; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a whole number (got '${!v}')"
done
((DURATION > 0 && CLIENTS > 0 && THREADS > 0 && SCALE > 0 && ROUNDS > 0)) ||
    die "DURATION, CLIENTS, THREADS, SCALE and ROUNDS must be positive"
for t in "${TARGET_LIST[@]}"; do
    [[ $t == direct || $t == pgbouncer || $t == pgshim ]] || die "unknown target '$t'"
done
for s in "${SCRIPT_LIST[@]}"; do
    [[ $s == select || $s == tpcb ]] || die "unknown script '$s' (select, tpcb)"
done
for m in "${MODE_LIST[@]}"; do
    [[ $m == simple || $m == extended || $m == prepared ]] || die "unknown mode '$m'"
done
case $PROFILE in
    "" | strace | perf) ;;
    *) die "PROFILE must be strace or perf" ;;
esac

has_target() {
    local t
    for t in "${TARGET_LIST[@]}"; do [[ $t == "$1" ]] && return 0; done
    return 1
}

if [[ -n $PROFILE ]] && ! command -v "$PROFILE" >/dev/null 2>&1; then
    die "PROFILE=$PROFILE needs $PROFILE: apt-get install -y ${PROFILE/perf/linux-perf}"
fi
tools=(psql pgbench timeout awk)
if has_target pgshim; then tools+=(cargo); fi
if has_target pgbouncer; then tools+=(pgbouncer); fi
if [[ $EUID -eq 0 ]]; then tools+=(runuser); fi
check_tools "${tools[@]}"

install_traps
if has_target pgshim; then build_pgshim; fi
make_tmp
mkdir -p "$OUT_DIR/logs"
rm -f "$OUT_DIR"/logs/*.log
if [[ -n $PROFILE ]]; then
    mkdir -p "$OUT_DIR/profile"
    rm -f "$OUT_DIR"/profile/*
fi

CLK_TCK=$(getconf CLK_TCK)

# --- services -----------------------------------------------------------------

start_postgres $((CLIENTS * 3 + 40))
pg_direct -d postgres -c "CREATE DATABASE bench"
log "pgbench -i -s $SCALE"
timeout 900 "$PGBENCH" -i -q -s "$SCALE" -h 127.0.0.1 -p "$PG_PORT" -U postgres bench \
    >"$OUT_DIR/logs/init.log" 2>&1 || { cat "$OUT_DIR/logs/init.log" >&2; die "pgbench -i failed"; }
if has_target pgbouncer; then start_pgbouncer $((CLIENTS + 4)); fi
if has_target pgshim; then start_pgshim 1000; fi

target_port() {
    case $1 in
        direct) echo "$PG_PORT" ;;
        pgbouncer) echo "$BOUNCER_PORT" ;;
        pgshim) echo "$PGSHIM_PORT" ;;
    esac
}

target_pid() {
    case $1 in
        pgbouncer) bouncer_pid ;;
        pgshim) echo "$BENCH_PGSHIM_PID" ;;
        *) return 1 ;;
    esac
}

# utime + stime of a process (all threads), in clock ticks.
cpu_ticks() {
    # Drop "pid (comm) " so the fields count from 3 (state): utime is field 14
    # of the line, stime 15.
    awk '{ sub(/^.*\) /, ""); split($0, f, " "); print f[12] + f[13] }' "/proc/$1/stat"
}

# CPU ticks (user + nice + system) the whole machine has used so far.
machine_busy_ticks() {
    awk '/^cpu / { print $2 + $3 + $4; exit }' /proc/stat
}

# CPU ticks used so far by everything the benchmark runs: the cluster
# (postmaster, live children, reaped children), the proxies, and this shell
# with its reaped children (pgbench).
our_ticks() {
    local pm bnc
    pm=$(head -n 1 "$BENCH_PGDATA/postmaster.pid" 2>/dev/null || echo 0)
    bnc=$(bouncer_pid || echo 0)
    cat /proc/[0-9]*/stat 2>/dev/null | awk -v pm="$pm" -v sh="$$" -v bnc="$bnc" \
        -v shim="${BENCH_PGSHIM_PID:-0}" '{
            pid = $1; line = $0; sub(/^.*\) /, "", line); split(line, f, " ")
            # f[2] ppid, f[12] utime, f[13] stime, f[14] cutime, f[15] cstime
            if (pid == pm || pid == sh) t += f[12] + f[13] + f[14] + f[15]
            else if (pid == bnc || pid == shim || f[2] == pm) t += f[12] + f[13]
        } END { print t + 0 }'
}

# Runs a command in the background with output to file $1, recorded for
# cleanup, and waits for it. (Redirecting the call itself would also redirect
# whatever a trap prints while we wait.)
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

# Same state before every measured run, done directly so no target pays for it.
reset_tables() {
    pg_direct -d bench -c "VACUUM pgbench_branches" -c "VACUUM pgbench_tellers" \
        -c "TRUNCATE pgbench_history" -c "CHECKPOINT" >/dev/null
}

# pgbench against $1 (target) with script $2 and mode $3 for $4 seconds;
# output to file $5.
pgbench_run() {
    local target=$1 script=$2 mode=$3 secs=$4 out=$5
    local args=(-n -c "$CLIENTS" -j "$THREADS" -T "$secs" -M "$mode"
        -h 127.0.0.1 -p "$(target_port "$target")" -U postgres)
    [[ $script == select ]] && args+=(-S)
    run_bg "$out" timeout -k 5 $((secs + 120)) "$PGBENCH" "${args[@]}" bench
}

declare -A TPS=() LAT=() CPU=() OTHER=() FAILED=()
NPROC=$(nproc)

# One measured run; appends TPS, latency and proxy CPU per transaction.
measure() {
    local target=$1 script=$2 mode=$3 round=$4
    local key="$script|$mode|$target" out pid="" cpu0=0 cpu1 tps lat failed txns prof_pid=""
    local busy0 ours0 wall0 other
    out="$OUT_DIR/logs/$script-$mode-$target-r$round.log"
    reset_tables
    if pid=$(target_pid "$target"); then
        if [[ -z $pid ]] || ! kill -0 "$pid" 2>/dev/null; then
            tail -n 20 "$BENCH_TMP/$target.log" >&2 2>/dev/null || true
            die "$target is not running any more"
        fi
        cpu0=$(cpu_ticks "$pid")
        if [[ $PROFILE == strace ]]; then
            strace -c -f -p "$pid" -o "$OUT_DIR/profile/strace-$script-$mode-$target.txt" 2>/dev/null &
            prof_pid=$!
        elif [[ $PROFILE == perf ]]; then
            perf record -q -F 499 -g -p "$pid" -o "$OUT_DIR/profile/perf-$script-$mode-$target.data" \
                -- sleep "$DURATION" >/dev/null 2>&1 &
            prof_pid=$!
        fi
        if [[ -n $prof_pid ]]; then
            BENCH_EXTRA_PIDS+=("$prof_pid")
            sleep 0.5 # let the profiler attach
        fi
    fi
    busy0=$(machine_busy_ticks)
    ours0=$(our_ticks)
    wall0=$(date +%s.%N)
    if ! pgbench_run "$target" "$script" "$mode" "$DURATION" "$out"; then
        log "pgbench failed against $target ($script, $mode): see $out"
        tail -n 5 "$out" >&2
    fi
    # CPU the rest of the machine used during the run, as a share of all CPUs.
    other=$(awk -v b=$(($(machine_busy_ticks) - busy0)) -v o=$(($(our_ticks) - ours0)) \
        -v w0="$wall0" -v w1="$(date +%s.%N)" -v hz="$CLK_TCK" -v n="$NPROC" \
        'BEGIN { v = (b - o) / ((w1 - w0) * hz * n) * 100; printf "%.0f", (v < 0 ? 0 : v) }')
    OTHER[$key]+="$other "
    if [[ -n $prof_pid ]]; then
        kill -INT "$prof_pid" 2>/dev/null || true
        wait "$prof_pid" 2>/dev/null || true
        forget_pid "$prof_pid"
    fi
    tps=$(awk '/^tps = / { v = $3 } END { print v }' "$out")
    lat=$(awk '/^latency average = / { print $4 }' "$out")
    txns=$(awk -F': ' '/^number of transactions actually processed/ { print $2 + 0 }' "$out")
    failed=$(awk -F': ' '/^number of failed transactions/ { print $2 + 0 }' "$out")
    if [[ -z $tps || -z $lat ]]; then
        tps=0 lat=0
        FAILED[$key]=1
    fi
    if [[ ${failed:-0} -gt 0 ]]; then FAILED[$key]=1; fi
    TPS[$key]+="$tps "
    LAT[$key]+="$lat "
    if [[ -n $pid ]] && [[ ${txns:-0} -gt 0 ]] && cpu1=$(cpu_ticks "$pid" 2>/dev/null); then
        CPU[$key]+="$(awk -v d=$((cpu1 - cpu0)) -v hz="$CLK_TCK" -v n="$txns" \
            'BEGIN { printf "%.1f", d / hz * 1e6 / n }') "
    fi
    log "$(printf '%-9s %-6s %-8s  %10.1f tps  %7.3f ms  other CPU %3s%%%s' "$target" "$script" "$mode" \
        "$tps" "$lat" "$other" "$([[ ${FAILED[$key]:-0} == 1 ]] && echo '  FAILED')")"
}

median() {
    # shellcheck disable=SC2086 # word splitting of the value list is intended
    printf '%s\n' $1 | sort -g | awk '{ v[NR] = $1 } END {
        if (NR == 0) { print ""; exit }
        if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

BUSY_BEFORE=0
warn_if_busy || BUSY_BEFORE=1

# --- warm-up ------------------------------------------------------------------

if ((WARMUP > 0)); then
    for target in "${TARGET_LIST[@]}"; do
        log "warm-up: $target (${WARMUP}s select-only)"
        pgbench_run "$target" select prepared "$WARMUP" "$OUT_DIR/logs/warmup-$target.log" ||
            { cat "$OUT_DIR/logs/warmup-$target.log" >&2; die "warm-up against $target failed"; }
    done
fi

# --- measured runs ------------------------------------------------------------

runs=$((ROUNDS * ${#SCRIPT_LIST[@]} * ${#MODE_LIST[@]} * ${#TARGET_LIST[@]}))
log "measuring: $runs runs of ${DURATION}s, $CLIENTS clients, $THREADS threads, scale $SCALE (~$((runs * (DURATION + 2) / 60 + 1)) min)"
for ((round = 1; round <= ROUNDS; round++)); do
    for script in "${SCRIPT_LIST[@]}"; do
        for mode in "${MODE_LIST[@]}"; do
            # Targets back to back for each script and mode (so drift hits all
            # of them alike), rotated each round so none is always first.
            n=${#TARGET_LIST[@]}
            for ((i = 0; i < n; i++)); do
                measure "${TARGET_LIST[$(((i + round - 1) % n))]}" "$script" "$mode" "$round"
            done
        done
    done
done

# --- report -------------------------------------------------------------------

ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b + 0 == 0) print "n/a"; else printf "%.3f", a / b }'
}

one_decimal() {
    if [[ -n $1 ]]; then printf '%.1f' "$1"; else echo n/a; fi
}

script_label() {
    case $1 in
        select) echo "select-only (-S)" ;;
        tpcb) echo "TPC-B-like" ;;
    esac
}

cpu_model=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)
pg_version=$("$PG_BIN/postgres" --version | awk '{ print $3 }')
bouncer_version=$(pgbouncer --version 2>/dev/null | awk 'NR == 1 { print $2 }' || true)

header="| script | mode |"
rule="|---|---|"
for t in "${TARGET_LIST[@]}"; do
    header+=" $t TPS | $t ms |"
    rule+="---:|---:|"
done
header+=" pgshim/direct | pgshim/pgbouncer | pgbouncer CPU µs/txn | pgshim CPU µs/txn | other CPU % |"
rule+="---:|---:|---:|---:|---:|"

rows=()
text_rows=()
any_failed=0
max_other=0
for script in "${SCRIPT_LIST[@]}"; do
    for mode in "${MODE_LIST[@]}"; do
        row="| $(script_label "$script") | $mode |"
        text=$(printf '%-17s %-9s' "$(script_label "$script")" "$mode")
        declare -A med_tps=()
        other=0
        for t in "${TARGET_LIST[@]}"; do
            key="$script|$mode|$t"
            med_tps[$t]=$(median "${TPS[$key]:-}")
            # shellcheck disable=SC2086 # a list of numbers
            for v in ${OTHER[$key]:-}; do if ((v > other)); then other=$v; fi; done
            lat=$(median "${LAT[$key]:-}")
            flag=""
            if [[ ${FAILED[$key]:-0} == 1 ]]; then
                flag=" (FAILED)"
                any_failed=1
            fi
            row+=" $(printf '%.0f' "${med_tps[$t]:-0}")$flag | $(printf '%.3f' "${lat:-0}") |"
            text+=$(printf ' %10.0f %8.3f' "${med_tps[$t]:-0}" "${lat:-0}")
        done
        r_direct=$(ratio "${med_tps[pgshim]:-}" "${med_tps[direct]:-}")
        r_bouncer=$(ratio "${med_tps[pgshim]:-}" "${med_tps[pgbouncer]:-}")
        key="$script|$mode|pgbouncer"
        c_bouncer=$(one_decimal "$(median "${CPU[$key]:-}")")
        key="$script|$mode|pgshim"
        c_pgshim=$(one_decimal "$(median "${CPU[$key]:-}")")
        if ((other > max_other)); then max_other=$other; fi
        row+=" $r_direct | $r_bouncer | $c_bouncer | $c_pgshim | $other |"
        text+=$(printf ' %13s %16s %9s %10s %6s' "$r_direct" "$r_bouncer" "$c_bouncer" "$c_pgshim" "$other")
        rows+=("$row")
        text_rows+=("$text")
        unset med_tps
    done
done

params="$CLIENTS clients, $THREADS pgbench threads, ${DURATION}s per run, scale $SCALE, $ROUNDS round(s) (median)"
machine="$(nproc) CPUs ($cpu_model), $(uname -sr); PostgreSQL $pg_version, PgBouncer ${bouncer_version:-n/a} (session mode), pgshim ${PGSHIM_LABEL:-n/a}"

mkdir -p "$OUT_DIR"
# A profiled run is not a benchmark: keep it away from results.md.
RESULTS_MD="$OUT_DIR/results.md"
if [[ -n $PROFILE ]]; then RESULTS_MD="$OUT_DIR/results-profiled.md"; fi
{
    echo "# pgshim benchmark: $(date -u +%Y-%m-%dT%H:%M:%SZ)${PROFILE:+ (profiled with $PROFILE: not a benchmark)}"
    echo
    echo "- $params"
    echo "- $machine"
    echo "- TPS excludes connection time; latency is pgbench's average; ratios are TPS ratios (> 1: pgshim faster)."
    echo "- CPU µs/txn: user+system CPU time the proxy process used during the run, per transaction."
    echo "- other CPU %: the most CPU that processes outside the benchmark used during any run of the row, as a share of all CPUs."
    if ((BUSY_BEFORE || max_other > 5)); then
        echo "- WARNING: other processes used the CPU during the benchmark (up to ${max_other}% of it); figures are skewed."
    fi
    echo
    echo "$header"
    echo "$rule"
    printf '%s\n' "${rows[@]}"
} >"$RESULTS_MD"

echo
echo "$params"
echo "$machine"
echo
hdr=$(printf '%-17s %-9s' script mode)
for t in "${TARGET_LIST[@]}"; do hdr+=$(printf ' %10s %8s' "${t:0:10}" "ms"); done
hdr+=$(printf ' %13s %16s %9s %10s %6s' pgshim/direct pgshim/pgbouncer "bnc µs/tx" "shim µs/tx" "other%")
echo "$hdr"
printf '%s\n' "${text_rows[@]}"
echo
if ((BUSY_BEFORE || max_other > 5)); then
    echo "WARNING: other processes used up to ${max_other}% of the CPU during the runs; the figures are skewed"
fi
echo "markdown table: $RESULTS_MD; pgbench output: $OUT_DIR/logs/"
if [[ -n $PROFILE ]]; then echo "profiles: $OUT_DIR/profile/"; fi
if ((any_failed)); then
    echo "some runs FAILED (see the logs above)" >&2
    exit 1
fi
