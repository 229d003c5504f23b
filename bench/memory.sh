#!/usr/bin/env bash
# pgshim's resident memory under load, against a throwaway cluster on 127.0.0.1:
#   1. copy-out     COPY ... TO STDOUT of SIZE_GB through pgshim to a fast reader
#   2. slow-reader  the same, SLOW_MB to a reader limited to SLOW_RATE_MB/s
#                   (backpressure: pgshim must stop reading from Postgres
#                   instead of buffering)
#   3. big-row      one BIG_ROW_MB row (a single CopyData message) through pgshim
#   4. copy-in      COPY ... FROM STDIN of SIZE_GB through pgshim into an
#                   unlogged table
#   5. idle         IDLE_CONNS idle connections: RSS before and after, KiB per
#                   connection (target: < 100 KiB)
# Each test gets a fresh pgshim process, so VmHWM (the kernel's peak RSS) is
# that test's peak; VmRSS is also sampled every 0.2 s. Prints a summary and
# writes bench/out/memory.md (bench/out/idle.md when only the idle test runs).
#
# The idle test's upstream: PostgreSQL cannot hold 10,000 backends on a small
# machine (a few MiB each), so by default pgshim's upstream for that test is
# PgBouncer in transaction pooling mode with a pool of 20: every pgshim
# connection still has its own upstream socket and has gone through a full
# startup and login, exactly as against Postgres, but PgBouncer multiplexes
# them onto a few backends. What is measured is pgshim's RSS, which does not
# depend on what sits behind the upstream socket. IDLE_VIA=postgres connects
# pgshim straight to the cluster instead (one backend per connection; keep
# IDLE_CONNS to about 1000 then).
#
# Environment:
#   TESTS="copy-out slow-reader big-row copy-in idle"   the tests to run
#   SIZE_GB=2          size of the streamed COPY out and COPY in (decimals ok)
#   SLOW_MB=512        size of the slow-reader COPY out
#   SLOW_RATE_MB=64    the slow reader's rate, MB/s
#   BIG_ROW_MB=256     size of the single row (0 skips the test)
#   IDLE_CONNS=10000   idle connections to hold
#   IDLE_VIA=pgbouncer upstream of the idle test: pgbouncer or postgres
#   PGSHIM_BIN=path    use this binary instead of `cargo build --release`
#   PG_BINDIR=path     PostgreSQL server binaries to use
#   KEEP_TMP=1         keep the scratch directory after exit
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SIZE_GB=${SIZE_GB:-2}
SLOW_MB=${SLOW_MB:-512}
SLOW_RATE_MB=${SLOW_RATE_MB:-64}
BIG_ROW_MB=${BIG_ROW_MB:-256}
IDLE_CONNS=${IDLE_CONNS:-10000}
IDLE_VIA=${IDLE_VIA:-pgbouncer}
read -r -a TEST_LIST <<<"${TESTS:-copy-out slow-reader big-row copy-in idle}"
TARGET_KIB_PER_CONN=100
IDLE_POOL=20

((${#TEST_LIST[@]} > 0)) || die "TESTS must name at least one test"
for t in "${TEST_LIST[@]}"; do
    case $t in
        copy-out | slow-reader | big-row | copy-in | idle) ;;
        *) die "unknown test '$t' (copy-out, slow-reader, big-row, copy-in, idle)" ;;
    esac
done
[[ $IDLE_VIA == pgbouncer || $IDLE_VIA == postgres ]] || die "IDLE_VIA must be pgbouncer or postgres"
has_test() {
    local t
    for t in "${TEST_LIST[@]}"; do [[ $t == "$1" ]] && return 0; done
    return 1
}

[[ $SIZE_GB =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "SIZE_GB must be a number (got '$SIZE_GB')"
for v in SLOW_MB SLOW_RATE_MB BIG_ROW_MB IDLE_CONNS; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a whole number (got '${!v}')"
done
((SLOW_RATE_MB > 0 && IDLE_CONNS > 0)) || die "SLOW_RATE_MB and IDLE_CONNS must be positive"
((BIG_ROW_MB < 1000)) || die "BIG_ROW_MB must be below 1000 (Postgres's 1 GB field limit)"
SIZE_BYTES=$(awk -v g="$SIZE_GB" 'BEGIN { printf "%d", g * 1024 * 1024 * 1024 }')
ROW_BYTES=1000 # 999 x's and a newline per COPY row
ROWS=$((SIZE_BYTES / ROW_BYTES))
SLOW_ROWS=$((SLOW_MB * 1024 * 1024 / ROW_BYTES))
((ROWS > 0 && SLOW_ROWS > 0)) || die "sizes too small"

tools=(psql python3 timeout awk yes head wc)
if [[ $EUID -eq 0 ]]; then tools+=(runuser); fi
if has_test idle && [[ $IDLE_VIA == pgbouncer ]]; then tools+=(pgbouncer); fi
check_tools cargo "${tools[@]}"
python3 -c 'import asyncio' 2>/dev/null || die "python3 cannot import asyncio"

# Enough descriptors for pgshim (two sockets per connection, plus about a
# dozen of its own), PgBouncer and the client. Where the hard limit cannot be
# raised that far (no CAP_SYS_RESOURCE, e.g. in a container), hold as many
# connections as it allows, and say so.
IDLE_REQUESTED=$IDLE_CONNS
if has_test idle; then
    if ! (raise_fd_limit $((IDLE_CONNS * 2 + 100))) 2>/dev/null; then
        IDLE_CONNS=$((($(ulimit -Hn) - 100) / 2))
        ((IDLE_CONNS > 0)) || die "the open-file limit ($(ulimit -Hn)) is too low for the idle test"
        log "WARNING: the open-file hard limit is $(ulimit -Hn) and cannot be raised: holding $IDLE_CONNS idle connections instead of $IDLE_REQUESTED"
    fi
    raise_fd_limit $((IDLE_CONNS * 2 + 100))
fi

install_traps
build_pgshim
make_tmp
mkdir -p "$OUT_DIR"

if has_test idle && [[ $IDLE_VIA == postgres ]]; then
    start_postgres $((IDLE_CONNS + 100))
else
    start_postgres 200
fi
pg_direct -d postgres -c "CREATE UNLOGGED TABLE copy_sink (t text)"

export PSQL
# Runs a bash snippet (positional arguments follow) in the background under
# `timeout`, which kills the snippet's whole process group when time is up.
# $1 = file for its output, $2 = time limit, $3 = snippet.
workload() {
    local out=$1 secs=$2 script=$3
    shift 3
    run_limited "$out" "$secs" bash -c "set -euo pipefail; $script" workload "$@"
}

# Runs a command in the background with output to file $1 and a time limit of
# $2 seconds, recorded for cleanup, and waits for it. (Redirecting the call
# itself would also redirect whatever a trap prints while we wait.)
run_limited() {
    local out=$1 secs=$2 pid rc=0
    shift 2
    timeout -k 5 "$secs" "$@" >"$out" &
    pid=$!
    BENCH_EXTRA_PIDS+=("$pid")
    wait "$pid" || rc=$?
    forget_pid "$pid"
    return "$rc"
}

# $1 = upstream port (default: the cluster's).
fresh_pgshim() {
    stop_pgshim
    PGSHIM_PORT=""
    start_pgshim $((IDLE_CONNS + 100)) "${1:-$PG_PORT}"
    export PGSHIM_PORT
    # One completed session so the baseline includes what the first client
    # brings in (runtime threads, TLS-free session code paths).
    "$PSQL" -X -q -h 127.0.0.1 -p "$PGSHIM_PORT" -U postgres -d postgres -c "SELECT 1" >/dev/null
    sleep 0.3
}

SAMPLER_PID=""
start_sampler() {
    rm -f "$BENCH_TMP/peak" "$BENCH_TMP/stop-sampler"
    rss_sampler "$BENCH_PGSHIM_PID" "$BENCH_TMP/peak" "$BENCH_TMP/stop-sampler" &
    SAMPLER_PID=$!
    BENCH_EXTRA_PIDS+=("$SAMPLER_PID")
}

# Prints the sampled peak VmRSS (KiB).
stop_sampler() {
    touch "$BENCH_TMP/stop-sampler"
    wait "$SAMPLER_PID" 2>/dev/null || true
    forget_pid "$SAMPLER_PID"
    cat "$BENCH_TMP/peak" 2>/dev/null || echo 0
}

now() { date +%s.%N; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

STREAM_ROWS=()
FAILED=0

# Runs one streaming test on a fresh pgshim and records a table row.
# $1 = label, $2 = expected bytes, $3 = timeout, $4 = snippet printing the
# bytes it moved, then the snippet's arguments.
stream_test() {
    local label=$1 expected=$2 secs=$3 script=$4
    shift 4
    local base peak hwm after t0 t1 moved rate verdict
    fresh_pgshim
    base=$(proc_kib "$BENCH_PGSHIM_PID" VmRSS)
    log "$label: $(mib $((expected / 1024))) MiB through pgshim"
    start_sampler
    t0=$(now)
    # Not in $(...): the workload must run in this shell so the traps can stop it.
    if workload "$BENCH_TMP/moved" "$secs" "$script" "$@"; then
        moved=$(tail -n 1 "$BENCH_TMP/moved")
    else
        moved="error $?"
    fi
    t1=$(now)
    peak=$(stop_sampler)
    hwm=$(proc_kib "$BENCH_PGSHIM_PID" VmHWM)
    after=$(proc_kib "$BENCH_PGSHIM_PID" VmRSS)
    if [[ $moved =~ ^[0-9]+$ ]] && ((moved == expected)); then
        verdict="ok"
    else
        verdict="FAILED (moved: ${moved:-nothing}, expected $expected)"
        FAILED=1
        moved=0
    fi
    rate=$(awk -v b="$moved" -v s="$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" \
        'BEGIN { printf "%.0f", (s > 0 ? b / s / 1048576 : 0) }')
    log "$label: $verdict, ${rate} MiB/s, pgshim RSS base $base KiB, peak $peak KiB, VmHWM $hwm KiB"
    STREAM_ROWS+=("| $label | $(mib $((expected / 1024))) MiB | $rate | $base | $peak | $hwm | $((hwm - base)) | $after | $verdict |")
}

# --- 1. COPY TO STDOUT, fast reader -------------------------------------------
if has_test copy-out; then
    # shellcheck disable=SC2016 # the snippets expand their own positional arguments
    COPY_OUT='"$PSQL" -X -q -h 127.0.0.1 -p "$PGSHIM_PORT" -U postgres -d postgres \
        -c "COPY (SELECT repeat('"'x'"', 999) FROM generate_series(1, $1)) TO STDOUT" | wc -c'
    stream_test "COPY TO STDOUT, fast reader" $((ROWS * ROW_BYTES)) $((300 + SIZE_BYTES / 5000000)) \
        "$COPY_OUT" "$ROWS"
fi

# --- 2. COPY TO STDOUT, slow reader -------------------------------------------
if has_test slow-reader; then
    # shellcheck disable=SC2016
    SLOW_READER='
import sys, time
rate = float(sys.argv[1]) * 1048576
n, t0, r = 0, time.monotonic(), sys.stdin.buffer
while True:
    b = r.read1(1 << 20)
    if not b:
        break
    n += len(b)
    ahead = n / rate - (time.monotonic() - t0)
    if ahead > 0:
        time.sleep(ahead)
print(n)'
    # shellcheck disable=SC2016
    COPY_OUT_SLOW='"$PSQL" -X -q -h 127.0.0.1 -p "$PGSHIM_PORT" -U postgres -d postgres \
        -c "COPY (SELECT repeat('"'x'"', 999) FROM generate_series(1, $1)) TO STDOUT" | python3 -c "$2" "$3"'
    stream_test "COPY TO STDOUT, reader at $SLOW_RATE_MB MiB/s" $((SLOW_ROWS * ROW_BYTES)) \
        $((120 + SLOW_MB * 3 / SLOW_RATE_MB)) "$COPY_OUT_SLOW" "$SLOW_ROWS" "$SLOW_READER" "$SLOW_RATE_MB"
fi

# --- 3. one big row -----------------------------------------------------------
if has_test big-row && ((BIG_ROW_MB > 0)); then
    # shellcheck disable=SC2016
    BIG_ROW='"$PSQL" -X -q -h 127.0.0.1 -p "$PGSHIM_PORT" -U postgres -d postgres \
        -c "COPY (SELECT repeat('"'x'"', $1)) TO STDOUT" | wc -c'
    stream_test "one ${BIG_ROW_MB} MiB row (one message)" $((BIG_ROW_MB * 1024 * 1024 + 1)) 300 \
        "$BIG_ROW" $((BIG_ROW_MB * 1024 * 1024))
fi

# --- 4. COPY FROM STDIN -------------------------------------------------------
if has_test copy-in; then
    # Prints the row count psql reports ("COPY n") times the row size.
    # shellcheck disable=SC2016
    COPY_IN='{ yes "$(printf "%0999d" 0 | tr 0 x)" || true; } | head -n "$1" |
        "$PSQL" -X -q -h 127.0.0.1 -p "$PGSHIM_PORT" -U postgres -d postgres -c "COPY copy_sink FROM STDIN" \
            -c "SELECT count(*) * $2 FROM copy_sink" -At'
    stream_test "COPY FROM STDIN" $((ROWS * ROW_BYTES)) $((300 + SIZE_BYTES / 2000000)) \
        "$COPY_IN" "$ROWS" "$ROW_BYTES"
    pg_direct -d postgres -c "TRUNCATE copy_sink"
fi

# --- 5. idle connections ------------------------------------------------------
IDLE_ROW=""
if has_test idle; then
    if [[ $IDLE_VIA == pgbouncer ]]; then
        start_pgbouncer "$IDLE_POOL" transaction $((IDLE_CONNS + 100))
        fresh_pgshim "$BOUNCER_PORT"
        idle_upstream="PgBouncer, transaction pooling, pool $IDLE_POOL"
    else
        fresh_pgshim
        idle_upstream="PostgreSQL (one backend per connection)"
    fi
    idle_base=$(proc_kib "$BENCH_PGSHIM_PID" VmRSS)
    log "opening $IDLE_CONNS idle connections through pgshim to $idle_upstream (RSS before: $idle_base KiB)"
    ready="$BENCH_TMP/idle-ready"
    python3 "$BENCH_DIR/idle_conns.py" --port "$PGSHIM_PORT" --count "$IDLE_CONNS" \
        --ready-file "$ready" --hold 900 2>"$BENCH_TMP/idle.err" &
    idle_pid=$!
    BENCH_EXTRA_PIDS+=("$idle_pid")
    t0=$(now)
    for ((i = 0; i < (60 + IDLE_CONNS / 20) * 10; i++)); do
        [[ -s $ready ]] && break
        kill -0 "$idle_pid" 2>/dev/null || break
        sleep 0.1
    done
    if [[ ! -s $ready ]]; then
        cat "$BENCH_TMP/idle.err" >&2
        die "the idle connections did not all open"
    fi
    open_secs=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')
    sleep 2 # let every session settle into its idle wait
    idle_rss=$(proc_kib "$BENCH_PGSHIM_PID" VmRSS)
    idle_hwm=$(proc_kib "$BENCH_PGSHIM_PID" VmHWM)
    idle_fds=$(find "/proc/$BENCH_PGSHIM_PID/fd" -mindepth 1 -maxdepth 1 | wc -l)
    upstream_seen=n/a
    if [[ $IDLE_VIA == pgbouncer ]]; then
        # Every connection must really be open upstream, one PgBouncer client each.
        read -r upstream_seen _ <<<"$(bouncer_pool_counts postgres)"
        ((upstream_seen >= IDLE_CONNS)) ||
            die "PgBouncer has $upstream_seen clients, expected at least $IDLE_CONNS"
    fi
    kill -TERM "$idle_pid" 2>/dev/null || true
    wait "$idle_pid" || die "idle_conns.py failed: $(cat "$BENCH_TMP/idle.err")"
    forget_pid "$idle_pid"
    sleep 1
    idle_after=$(proc_kib "$BENCH_PGSHIM_PID" VmRSS)
    per_conn=$(awk -v a="$idle_rss" -v b="$idle_base" -v n="$IDLE_CONNS" 'BEGIN { printf "%.1f", (a - b) / n }')
    if awk -v p="$per_conn" -v t="$TARGET_KIB_PER_CONN" 'BEGIN { exit !(p < t) }'; then
        idle_verdict="ok (< $TARGET_KIB_PER_CONN KiB)"
    else
        idle_verdict="OVER TARGET (>= $TARGET_KIB_PER_CONN KiB)"
        FAILED=1
    fi
    log "idle: $IDLE_CONNS connections opened in ${open_secs}s, RSS $idle_base -> $idle_rss KiB, $per_conn KiB each, $idle_fds fds, PgBouncer clients $upstream_seen; after closing $idle_after KiB"
    shown=$IDLE_CONNS
    if ((IDLE_CONNS != IDLE_REQUESTED)); then shown+=" (of $IDLE_REQUESTED asked: open-file limit $(ulimit -Hn))"; fi
    IDLE_ROW="| $shown | $idle_upstream | $idle_base | $idle_rss | $idle_hwm | $per_conn | $idle_fds | $idle_after | $idle_verdict |"
fi

# --- report -------------------------------------------------------------------

pg_version=$("$PG_BIN/postgres" --version | awk '{ print $3 }')
report=$(
    echo "# pgshim memory: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo
    echo "- $(nproc) CPUs, $(free -g | awk '/^Mem:/ { print $2 }') GiB RAM, $(uname -sr); PostgreSQL $pg_version; pgshim ${PGSHIM_LABEL:-n/a}; plaintext, 127.0.0.1"
    echo "- each test on a fresh pgshim process; RSS in KiB (VmRSS sampled every 0.2 s; VmHWM is the kernel's peak, so growth = VmHWM - RSS before)"
    if ((${#STREAM_ROWS[@]} > 0)); then
        echo
        echo "## Streaming"
        echo
        echo "| test | data | MiB/s | RSS before | peak RSS (sampled) | VmHWM | growth | RSS after | result |"
        echo "|---|---:|---:|---:|---:|---:|---:|---:|---|"
        printf '%s\n' "${STREAM_ROWS[@]}"
    fi
    if [[ -n $IDLE_ROW ]]; then
        echo
        echo "## Idle connections"
        echo
        echo "| connections | pgshim's upstream | RSS before | RSS with connections open | VmHWM | KiB per connection | pgshim fds | RSS after closing | result |"
        echo "|---:|---|---:|---:|---:|---:|---:|---:|---|"
        echo "$IDLE_ROW"
    fi
)
REPORT_MD="$OUT_DIR/memory.md"
if [[ ${TEST_LIST[*]} == idle ]]; then REPORT_MD="$OUT_DIR/idle.md"; fi
echo "$report" >"$REPORT_MD"
echo
echo "$report"
echo
echo "written to $REPORT_MD"
if ((FAILED)); then
    echo "some checks FAILED" >&2
    exit 1
fi
