#!/usr/bin/env bash
# pgbench through three targets on one machine, in one run:
#   direct     PostgreSQL itself
#   pgbouncer  PgBouncer (distribution package) in session mode, pool warmed
#              to the largest client count before measuring
#   pgshim     pgshim, plaintext upstream
# for each client count (1, 16, 256, 1000), the select-only (-S) and
# TPC-B-like scripts and the simple, extended and prepared protocol modes.
# Prints TPS with p50/p99 transaction latency (from pgbench's per-transaction
# log) per target, the TPS ratios pgshim/direct and pgshim/pgbouncer per cell,
# and the p50 latency each proxy adds over direct at one client; writes
# bench/out/results.md.
#
# Everything runs on 127.0.0.1 in a throwaway cluster that is removed on exit.
# The cluster allows twice the largest client count plus 50 connections
# (PgBouncer keeps its warmed pool while the other targets run) and the
# open-file limit is raised to four descriptors per client.
#
# Environment:
#   DURATION=10      seconds per pgbench run (QUICK=1 sets 3)
#   CLIENTS="1 16 256 1000"   pgbench -c values to sweep
#   THREADS=2        pgbench -j (at most the client count)
#   SCALE=10         pgbench -i -s
#   ROUNDS=1         repeat the whole matrix; the table shows medians
#   WARMUP=3         seconds of select-only warm-up per target, at the largest
#                    client count, before measuring
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
DURATION=${DURATION:-10}
read -r -a CLIENT_LIST <<<"${CLIENTS:-1 16 256 1000}"
THREADS=${THREADS:-2}
SCALE=${SCALE:-10}
ROUNDS=${ROUNDS:-1}
WARMUP=${WARMUP:-3}
read -r -a TARGET_LIST <<<"${TARGETS:-direct pgbouncer pgshim}"
read -r -a SCRIPT_LIST <<<"${SCRIPTS:-select tpcb}"
read -r -a MODE_LIST <<<"${MODES:-simple extended prepared}"
PROFILE=${PROFILE:-}

for v in DURATION THREADS SCALE ROUNDS WARMUP; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a whole number (got '${!v}')"
done
((DURATION > 0 && THREADS > 0 && SCALE > 0 && ROUNDS > 0)) ||
    die "DURATION, THREADS, SCALE and ROUNDS must be positive"
((${#CLIENT_LIST[@]} > 0)) || die "CLIENTS must list at least one client count"
MAX_CLIENTS=0
for c in "${CLIENT_LIST[@]}"; do
    [[ $c =~ ^[1-9][0-9]*$ ]] || die "CLIENTS must be positive whole numbers (got '$c')"
    ((c > MAX_CLIENTS)) && MAX_CLIENTS=$c
done
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

# pgbench, PgBouncer and pgshim each hold up to two sockets per client.
raise_fd_limit $((MAX_CLIENTS * 4 + 1024))

install_traps
if has_target pgshim; then build_pgshim; fi
make_tmp
mkdir -p "$OUT_DIR/logs" "$BENCH_TMP/txlog"
rm -f "$OUT_DIR"/logs/*.log
if [[ -n $PROFILE ]]; then
    mkdir -p "$OUT_DIR/profile"
    rm -f "$OUT_DIR"/profile/*
fi

CLK_TCK=$(getconf CLK_TCK)

# --- services -----------------------------------------------------------------

start_postgres $((MAX_CLIENTS * 2 + 50))
pg_direct -d postgres -c "CREATE DATABASE bench"
log "pgbench -i -s $SCALE"
timeout 900 "$PGBENCH" -i -q -s "$SCALE" -h 127.0.0.1 -p "$PG_PORT" -U postgres bench \
    >"$OUT_DIR/logs/init.log" 2>&1 || { cat "$OUT_DIR/logs/init.log" >&2; die "pgbench -i failed"; }
if has_target pgbouncer; then start_pgbouncer $((MAX_CLIENTS + 4)) session $((MAX_CLIENTS * 2 + 100)); fi
if has_target pgshim; then start_pgshim $((MAX_CLIENTS + 100)); fi

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
    # Processes come and go between the glob and the read: cat's complaint
    # about a vanished one must not end the script (pipefail).
    { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk -v pm="$pm" -v sh="$$" -v bnc="$bnc" \
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

# pgbench against $1 (target) with script $2 and mode $3 for $4 seconds with
# $5 clients; output to file $6. A 7th argument is a --log-prefix: pgbench
# then writes one line per transaction to files starting with it.
#
# pgbench's -T clock starts before its clients connect, and 1000 connections
# to Postgres take seconds here (one fork each), so -T gets a second per 200
# clients on top; the TPS pgbench reports leaves the connection time out.
pgbench_run() {
    local target=$1 script=$2 mode=$3 secs=$4 clients=$5 out=$6 txlog=${7:-}
    local threads=$((THREADS < clients ? THREADS : clients))
    local args=(-n -c "$clients" -j "$threads" -T $((secs + clients / 200)) -M "$mode"
        -h 127.0.0.1 -p "$(target_port "$target")" -U postgres)
    [[ $script == select ]] && args+=(-S)
    [[ -n $txlog ]] && args+=(--log --log-prefix="$txlog")
    run_bg "$out" timeout -k 5 $((secs + clients / 200 + 180)) "$PGBENCH" "${args[@]}" bench
}

# p50 and p99 transaction latency in ms from pgbench per-transaction logs
# (the files named; field 3 is the latency in µs; failed transactions, which
# have a word there, are left out). Prints nothing when there are none.
tx_percentiles() {
    awk '$3 ~ /^[0-9]+$/ { print $3 }' "$@" | LC_ALL=C sort -n | awk '
        { v[NR] = $1 }
        END {
            if (NR == 0) exit
            i50 = int(NR * 0.50); if (i50 < NR * 0.50) i50++
            i99 = int(NR * 0.99); if (i99 < NR * 0.99) i99++
            printf "%.3f %.3f\n", v[i50] / 1000, v[i99] / 1000
        }'
}

declare -A TPS=() P50=() P99=() CPU=() OTHER=() FAILED=()
NPROC=$(nproc)

# One measured run; appends TPS, p50/p99 latency and proxy CPU per transaction.
measure() {
    local target=$1 script=$2 mode=$3 clients=$4 round=$5
    local key="$clients|$script|$mode|$target" out pid="" cpu0=0 cpu1 tps p50 p99 failed txns prof_pid=""
    local busy0 ours0 wall0 other txlog pct
    out="$OUT_DIR/logs/c$clients-$script-$mode-$target-r$round.log"
    txlog="$BENCH_TMP/txlog/c$clients-$script-$mode-$target"
    reset_tables
    if pid=$(target_pid "$target"); then
        if [[ -z $pid ]] || ! kill -0 "$pid" 2>/dev/null; then
            tail -n 20 "$BENCH_TMP/$target.log" >&2 2>/dev/null || true
            die "$target is not running any more"
        fi
        cpu0=$(cpu_ticks "$pid")
        if [[ $PROFILE == strace ]]; then
            strace -c -f -p "$pid" -o "$OUT_DIR/profile/strace-c$clients-$script-$mode-$target.txt" 2>/dev/null &
            prof_pid=$!
        elif [[ $PROFILE == perf ]]; then
            perf record -q -F 499 -g -p "$pid" -o "$OUT_DIR/profile/perf-c$clients-$script-$mode-$target.data" \
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
    if ! pgbench_run "$target" "$script" "$mode" "$DURATION" "$clients" "$out" "$txlog"; then
        log "pgbench failed against $target ($clients clients, $script, $mode): see $out"
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
    txns=$(awk -F': ' '/^number of transactions actually processed/ { print $2 + 0 }' "$out")
    failed=$(awk -F': ' '/^number of failed transactions/ { print $2 + 0 }' "$out")
    pct=$(tx_percentiles "$txlog".* 2>/dev/null || true)
    rm -f "$txlog".*
    read -r p50 p99 <<<"$pct"
    if [[ -z $tps || -z $p50 ]]; then
        tps=0 p50=0 p99=0
        FAILED[$key]=1
    fi
    if [[ ${failed:-0} -gt 0 ]]; then FAILED[$key]=1; fi
    TPS[$key]+="$tps "
    P50[$key]+="$p50 "
    P99[$key]+="$p99 "
    if [[ -n $pid ]] && [[ ${txns:-0} -gt 0 ]] && cpu1=$(cpu_ticks "$pid" 2>/dev/null); then
        CPU[$key]+="$(awk -v d=$((cpu1 - cpu0)) -v hz="$CLK_TCK" -v n="$txns" \
            'BEGIN { printf "%.1f", d / hz * 1e6 / n }') "
    fi
    log "$(printf '%-9s %4s clients %-6s %-8s %10.1f tps  p50 %8.3f ms  p99 %8.3f ms  other CPU %3s%%%s' \
        "$target" "$clients" "$script" "$mode" "$tps" "$p50" "$p99" "$other" \
        "$([[ ${FAILED[$key]:-0} == 1 ]] && echo '  FAILED')")"
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
        # At the largest client count, so PgBouncer's pool is full before any
        # measured run (session mode: one server connection per client).
        log "warm-up: $target (${WARMUP}s select-only, $MAX_CLIENTS clients)"
        pgbench_run "$target" select prepared "$WARMUP" "$MAX_CLIENTS" "$OUT_DIR/logs/warmup-$target.log" ||
            { cat "$OUT_DIR/logs/warmup-$target.log" >&2; die "warm-up against $target failed"; }
        if [[ $target == pgbouncer ]]; then
            read -r _ n_servers <<<"$(bouncer_pool_counts bench)"
            log "pgbouncer holds $n_servers server connections"
        fi
    done
fi

# --- measured runs ------------------------------------------------------------

runs=$((ROUNDS * ${#CLIENT_LIST[@]} * ${#SCRIPT_LIST[@]} * ${#MODE_LIST[@]} * ${#TARGET_LIST[@]}))
secs=0
for c in "${CLIENT_LIST[@]}"; do secs=$((secs + DURATION + c / 200 + 3)); done
secs=$((secs * runs / ${#CLIENT_LIST[@]}))
log "measuring: $runs runs of ${DURATION}s, clients ${CLIENT_LIST[*]}, up to $THREADS threads, scale $SCALE (~$((secs / 60 + 1)) min)"
for ((round = 1; round <= ROUNDS; round++)); do
    for clients in "${CLIENT_LIST[@]}"; do
        for script in "${SCRIPT_LIST[@]}"; do
            for mode in "${MODE_LIST[@]}"; do
                # Targets back to back for each cell (so drift in the machine's
                # speed hits all of them alike), rotated each round so none is
                # always first.
                n=${#TARGET_LIST[@]}
                for ((i = 0; i < n; i++)); do
                    measure "${TARGET_LIST[$(((i + round - 1) % n))]}" "$script" "$mode" "$clients" "$round"
                done
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

header="| clients | script | mode |"
rule="|---:|---|---|"
for t in "${TARGET_LIST[@]}"; do
    header+=" $t TPS | p50 ms | p99 ms |"
    rule+="---:|---:|---:|"
done
header+=" pgshim/direct | pgshim/pgbouncer | pgbouncer CPU µs/txn | pgshim CPU µs/txn | other CPU % |"
rule+="---:|---:|---:|---:|---:|"

declare -A MED_P50=()
rows=()
text_rows=()
any_failed=0
max_other=0
cells=0
cells_at_bouncer=0
for clients in "${CLIENT_LIST[@]}"; do
    for script in "${SCRIPT_LIST[@]}"; do
        for mode in "${MODE_LIST[@]}"; do
            row="| $clients | $(script_label "$script") | $mode |"
            text=$(printf '%7s %-17s %-9s' "$clients" "$(script_label "$script")" "$mode")
            declare -A med_tps=()
            other=0
            for t in "${TARGET_LIST[@]}"; do
                key="$clients|$script|$mode|$t"
                med_tps[$t]=$(median "${TPS[$key]:-}")
                # shellcheck disable=SC2086 # a list of numbers
                for v in ${OTHER[$key]:-}; do if ((v > other)); then other=$v; fi; done
                p50=$(median "${P50[$key]:-}")
                p99=$(median "${P99[$key]:-}")
                MED_P50[$key]=$p50
                flag=""
                if [[ ${FAILED[$key]:-0} == 1 ]]; then
                    flag=" (FAILED)"
                    any_failed=1
                fi
                row+=" $(printf '%.0f' "${med_tps[$t]:-0}")$flag | $(printf '%.3f' "${p50:-0}") | $(printf '%.3f' "${p99:-0}") |"
                text+=$(printf ' %8.0f %7.3f %8.3f' "${med_tps[$t]:-0}" "${p50:-0}" "${p99:-0}")
            done
            r_direct=$(ratio "${med_tps[pgshim]:-}" "${med_tps[direct]:-}")
            r_bouncer=$(ratio "${med_tps[pgshim]:-}" "${med_tps[pgbouncer]:-}")
            if [[ $r_bouncer != n/a ]]; then
                cells=$((cells + 1))
                if awk -v r="$r_bouncer" 'BEGIN { exit !(r >= 1.0) }'; then
                    cells_at_bouncer=$((cells_at_bouncer + 1))
                fi
            fi
            key="$clients|$script|$mode|pgbouncer"
            c_bouncer=$(one_decimal "$(median "${CPU[$key]:-}")")
            key="$clients|$script|$mode|pgshim"
            c_pgshim=$(one_decimal "$(median "${CPU[$key]:-}")")
            if ((other > max_other)); then max_other=$other; fi
            row+=" $r_direct | $r_bouncer | $c_bouncer | $c_pgshim | $other |"
            text+=$(printf ' %7s %7s %7s %7s %5s' "$r_direct" "$r_bouncer" "$c_bouncer" "$c_pgshim" "$other")
            rows+=("$row")
            text_rows+=("$text")
            unset med_tps
        done
    done
done

# p50 latency each proxy adds over direct at one client, in µs.
added_rows=()
added_text=()
if [[ " ${CLIENT_LIST[*]} " == *" 1 "* ]] && has_target direct; then
    for script in "${SCRIPT_LIST[@]}"; do
        for mode in "${MODE_LIST[@]}"; do
            base=${MED_P50[1|$script|$mode|direct]:-}
            row="| $(script_label "$script") | $mode | $(printf '%.0f' "$(awk -v b="${base:-0}" 'BEGIN { print b * 1000 }')") |"
            text=$(printf '%-17s %-9s %8.0f' "$(script_label "$script")" "$mode" "$(awk -v b="${base:-0}" 'BEGIN { print b * 1000 }')")
            for t in pgbouncer pgshim; do
                if has_target "$t" && [[ -n $base && -n ${MED_P50[1|$script|$mode|$t]:-} ]]; then
                    added=$(awk -v a="${MED_P50[1|$script|$mode|$t]}" -v b="$base" 'BEGIN { printf "%+.0f", (a - b) * 1000 }')
                else
                    added=n/a
                fi
                row+=" $added |"
                text+=$(printf ' %12s' "$added")
            done
            added_rows+=("$row")
            added_text+=("$text")
        done
    done
fi

params="clients ${CLIENT_LIST[*]}, up to $THREADS pgbench threads, ${DURATION}s per run, scale $SCALE, $ROUNDS round(s) (median)"
if [[ ${QUICK:-0} == 1 ]]; then params+=", QUICK=1"; fi
machine="$(nproc) CPUs ($cpu_model), $(free -g | awk '/^Mem:/ { print $2 }') GiB RAM, $(uname -sr); PostgreSQL $pg_version (max_connections $((MAX_CLIENTS * 2 + 50))), PgBouncer ${bouncer_version:-n/a} (session mode, pool $((MAX_CLIENTS + 4)), warmed), pgshim ${PGSHIM_LABEL:-n/a}"
summary=""
if ((cells > 0)); then
    summary="pgshim at or above PgBouncer's TPS in $cells_at_bouncer of $cells cells (target: all)"
fi

mkdir -p "$OUT_DIR"
# A profiled run is not a benchmark: keep it away from results.md.
RESULTS_MD="$OUT_DIR/results.md"
if [[ -n $PROFILE ]]; then RESULTS_MD="$OUT_DIR/results-profiled.md"; fi
{
    echo "# pgshim benchmark: $(date -u +%Y-%m-%dT%H:%M:%SZ)${PROFILE:+ (profiled with $PROFILE: not a benchmark)}"
    echo
    echo "- $params"
    echo "- $machine"
    echo "- TPS excludes connection time; p50/p99 are transaction latencies from pgbench's per-transaction log (--log); ratios are TPS ratios (> 1: pgshim faster)."
    echo "- CPU µs/txn: user+system CPU time the proxy process used during the run, per transaction."
    echo "- other CPU %: the most CPU that processes outside the benchmark used during any run of the row, as a share of all CPUs."
    if ((BUSY_BEFORE || max_other > 5)); then
        echo "- WARNING: other processes used the CPU during the benchmark (up to ${max_other}% of it); figures are skewed."
    fi
    [[ -n $summary ]] && echo "- $summary."
    echo
    echo "$header"
    echo "$rule"
    printf '%s\n' "${rows[@]}"
    if ((${#added_rows[@]} > 0)); then
        echo
        echo "p50 latency added over direct at 1 client, µs per transaction (target: pgshim no higher than PgBouncer):"
        echo
        echo "| script | mode | direct p50 µs | PgBouncer adds | pgshim adds |"
        echo "|---|---|---:|---:|---:|"
        printf '%s\n' "${added_rows[@]}"
    fi
} >"$RESULTS_MD"

echo
echo "$params"
echo "$machine"
echo
hdr=$(printf '%7s %-17s %-9s' clients script mode)
for t in "${TARGET_LIST[@]}"; do hdr+=$(printf ' %8s %7s %8s' "${t:0:8}" "p50 ms" "p99 ms"); done
hdr+=$(printf ' %7s %7s %7s %7s %5s' /direct /bouncr "bnc µs" "shim µs" other)
echo "$hdr"
printf '%s\n' "${text_rows[@]}"
echo
echo "(/direct, /bouncr: pgshim's TPS ratio; bnc/shim µs: proxy CPU per transaction; other: % CPU used by other processes)"
[[ -n $summary ]] && echo "$summary"
if ((${#added_text[@]} > 0)); then
    echo
    echo "p50 latency added over direct at 1 client (µs per transaction):"
    printf '%-17s %-9s %8s %12s %12s\n' script mode "direct" "PgBouncer" "pgshim"
    printf '%s\n' "${added_text[@]}"
fi
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
