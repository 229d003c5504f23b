# shellcheck shell=bash disable=SC2034 # variables here are used by the scripts that source this file
# Helpers shared by bench/run.sh and bench/memory.sh: tool discovery, a
# throwaway PostgreSQL cluster, PgBouncer and pgshim on free loopback ports,
# RSS sampling, and cleanup. Sourced, not executed.
#
# Everything started here is recorded in the BENCH_* variables and stopped by
# bench_cleanup, which the calling script installs as an EXIT trap.

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$BENCH_DIR/.." && pwd)
OUT_DIR="$BENCH_DIR/out"
INSTALL_HINT="apt-get install -y postgresql pgbouncer"

PGSHIM_LABEL=""       # what is measured: commit or binary (set by build_pgshim)
BENCH_TMP=""          # scratch directory, removed on exit
BENCH_PGDATA=""       # data directory of the throwaway cluster
BENCH_PG_STARTED=0
BENCH_BOUNCER_PIDFILE=""
BENCH_PGSHIM_PID=""
BENCH_EXTRA_PIDS=()   # other background processes (pgbench, samplers, clients)
BENCH_USED_PORTS=()

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Runs a command as the postgres user when we are root (initdb, postgres and
# pgbouncer refuse to run as root), as ourselves otherwise. Runs from the
# scratch directory so the postgres user can read its working directory.
as_pg() {
    if [[ $EUID -eq 0 ]]; then
        (cd "$BENCH_TMP" && runuser -u postgres -- "$@")
    else
        (cd "$BENCH_TMP" && "$@")
    fi
}

# Finds the PostgreSQL server binaries: $PG_BINDIR, `pg_config --bindir`,
# initdb on PATH, or the newest /usr/lib/postgresql/*/bin.
find_pg_bindir() {
    local dir candidate
    if [[ -n ${PG_BINDIR:-} ]]; then
        [[ -x $PG_BINDIR/initdb ]] || die "PG_BINDIR=$PG_BINDIR has no initdb"
        echo "$PG_BINDIR"
        return
    fi
    if command -v pg_config >/dev/null 2>&1; then
        dir=$(pg_config --bindir 2>/dev/null || true)
        if [[ -n $dir && -x $dir/initdb ]]; then
            echo "$dir"
            return
        fi
    fi
    if command -v initdb >/dev/null 2>&1; then
        dirname "$(command -v initdb)"
        return
    fi
    candidate=$(printf '%s\n' /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n 1)
    if [[ -x $candidate ]]; then
        dirname "$candidate"
        return
    fi
    return 1
}

# Checks for every tool the caller names; prints how to install the missing
# ones and exits. Sets PG_BIN, PSQL, PGBENCH.
check_tools() {
    local missing=() tool
    if ! PG_BIN=$(find_pg_bindir); then
        missing+=("initdb/pg_ctl/postgres (PostgreSQL server)")
    fi
    PSQL=""
    PGBENCH=""
    if [[ -n ${PG_BIN:-} && -x $PG_BIN/psql ]]; then PSQL=$PG_BIN/psql; fi
    if [[ -n ${PG_BIN:-} && -x $PG_BIN/pgbench ]]; then PGBENCH=$PG_BIN/pgbench; fi
    [[ -n $PSQL ]] || PSQL=$(command -v psql || true)
    [[ -n $PGBENCH ]] || PGBENCH=$(command -v pgbench || true)
    for tool in "$@"; do
        case $tool in
            psql) [[ -n $PSQL ]] || missing+=(psql) ;;
            pgbench) [[ -n $PGBENCH ]] || missing+=(pgbench) ;;
            pgbouncer) command -v pgbouncer >/dev/null 2>&1 || missing+=(pgbouncer) ;;
            cargo)
                if [[ -z ${PGSHIM_BIN:-} ]] && ! command -v cargo >/dev/null 2>&1; then
                    die "cargo not found: install Rust from https://rustup.rs (or set PGSHIM_BIN to a built pgshim binary)"
                fi
                ;;
            *) command -v "$tool" >/dev/null 2>&1 || missing+=("$tool") ;;
        esac
    done
    if [[ $EUID -eq 0 ]] && ! id postgres >/dev/null 2>&1; then
        missing+=("the postgres user")
    fi
    if ((${#missing[@]} > 0)); then
        printf 'missing: %s\n' "${missing[@]}" >&2
        printf 'install with:\n    %s\n' "$INSTALL_HINT" >&2
        exit 1
    fi
}

# Builds pgshim in release mode (unless PGSHIM_BIN points at a binary) and sets PGSHIM.
build_pgshim() {
    if [[ -n ${PGSHIM_BIN:-} ]]; then
        [[ -x $PGSHIM_BIN ]] || die "PGSHIM_BIN=$PGSHIM_BIN is not executable"
        PGSHIM=$PGSHIM_BIN
        PGSHIM_LABEL=$(pgshim_label)
        return
    fi
    log "building pgshim (cargo build --release)"
    (cd "$REPO_DIR" && cargo build --release --quiet) || die "cargo build --release failed"
    PGSHIM="$REPO_DIR/target/release/pgshim"
    PGSHIM_LABEL=$(pgshim_label)
}

# Describes the pgshim being measured: the commit it was built from, or the
# binary given in PGSHIM_BIN.
pgshim_label() {
    local rev
    if [[ -n ${PGSHIM_BIN:-} ]]; then
        echo "$PGSHIM_BIN ($("$PGSHIM" --version 2>/dev/null || echo "version unknown"))"
        return
    fi
    rev=$(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo unknown)
    if [[ -n $(git -C "$REPO_DIR" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null) ]]; then
        rev+="+uncommitted changes"
    fi
    echo "$rev"
}

# Creates the scratch directory (readable by the postgres user).
make_tmp() {
    BENCH_TMP=$(mktemp -d "${TMPDIR:-/tmp}/pgshim-bench.XXXXXX")
    chmod 755 "$BENCH_TMP"
    if [[ $EUID -eq 0 ]]; then chown postgres: "$BENCH_TMP"; fi
}

port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Picks a loopback port nobody listens on and that this run has not handed out,
# below the kernel's ephemeral range (so no outgoing connection holds it).
# Sets the variable named by $1.
pick_port() {
    local -n _port=$1
    local p i used lo=20000 span=40000 eph_lo _eph_hi
    if read -r eph_lo _eph_hi </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null && ((eph_lo > 12000)); then
        lo=10000
        span=$((eph_lo - lo))
    fi
    for ((i = 0; i < 500; i++)); do
        p=$((lo + RANDOM % span))
        used=0
        for u in "${BENCH_USED_PORTS[@]}"; do [[ $u == "$p" ]] && used=1; done
        if ((used == 0)) && ! port_in_use "$p"; then
            BENCH_USED_PORTS+=("$p")
            _port=$p
            return 0
        fi
    done
    die "no free port found"
}

# Waits up to $2 seconds for something to listen on 127.0.0.1:$1.
wait_port() {
    local port=$1 limit=$2 i
    for ((i = 0; i < limit * 10; i++)); do
        port_in_use "$port" && return 0
        sleep 0.1
    done
    return 1
}

# Raises this shell's open-file limit (inherited by everything it starts) to
# at least $1, lifting the hard limit too when running as root; exits when
# that is not possible.
raise_fd_limit() {
    local need=$1
    (($(ulimit -n) >= need)) && return 0
    if (($(ulimit -Hn) < need)) && [[ $EUID -eq 0 ]]; then
        ulimit -Hn "$need" 2>/dev/null || true
    fi
    ulimit -n "$need" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
    (($(ulimit -n) >= need)) ||
        die "need $need open files; ulimit -n is $(ulimit -n) and the hard limit $(ulimit -Hn) (raise it, or run as root)"
}

# Starts a throwaway cluster on a free port. $1 = max_connections.
# Sets PG_PORT.
start_postgres() {
    local max_conn=$1
    pick_port PG_PORT
    BENCH_PGDATA="$BENCH_TMP/pgdata"
    log "initdb in $BENCH_PGDATA"
    as_pg "$PG_BIN/initdb" -D "$BENCH_PGDATA" -U postgres -A trust -E UTF8 --no-locale \
        >"$BENCH_TMP/initdb.log" 2>&1 || { cat "$BENCH_TMP/initdb.log" >&2; die "initdb failed"; }
    cat >>"$BENCH_PGDATA/postgresql.conf" <<EOF

# pgshim bench: throwaway cluster, speed over durability
listen_addresses = '127.0.0.1'
unix_socket_directories = '$BENCH_TMP'
max_connections = $max_conn
shared_buffers = 256MB
fsync = off
synchronous_commit = off
full_page_writes = off
max_wal_size = 4GB
checkpoint_timeout = 30min
autovacuum = off
log_min_messages = warning
log_connections = off
EOF
    local attempt
    for attempt in 1 2 3; do
        log "starting postgres on 127.0.0.1:$PG_PORT (max_connections=$max_conn)"
        BENCH_PG_STARTED=1
        if as_pg "$PG_BIN/pg_ctl" -D "$BENCH_PGDATA" -l "$BENCH_TMP/postgres.log" -w -t 60 start \
            -o "-p $PG_PORT" >/dev/null; then
            return 0
        fi
        BENCH_PG_STARTED=0
        # Someone took the port between the check and the bind: try another.
        if ((attempt == 3)) || ! grep -q "Address already in use" "$BENCH_TMP/postgres.log"; then
            break
        fi
        pick_port PG_PORT
    done
    cat "$BENCH_TMP/postgres.log" >&2
    die "postgres did not start"
}

stop_postgres() {
    if ((BENCH_PG_STARTED)); then
        as_pg "$PG_BIN/pg_ctl" -D "$BENCH_PGDATA" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
        BENCH_PG_STARTED=0
    fi
}

# psql against the cluster directly; extra arguments follow.
pg_direct() {
    "$PSQL" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres "$@"
}

# Starts PgBouncer in front of the cluster. $1 = pool size, $2 = pool mode
# (session, the default, or transaction), $3 = most client connections
# (default: four times the pool plus 100). Server connections are kept while
# idle, so a pool warmed once stays warm between runs. The open-file limit
# must allow two descriptors per connection (raise_fd_limit). Sets BOUNCER_PORT.
start_pgbouncer() {
    local pool=$1 mode=${2:-session} ini="$BENCH_TMP/pgbouncer.ini"
    local max_client=${3:-$((pool * 4 + 100))}
    pick_port BOUNCER_PORT
    printf '"postgres" ""\n' >"$BENCH_TMP/userlist.txt"
    cat >"$ini" <<EOF
[databases]
* = host=127.0.0.1 port=$PG_PORT

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BOUNCER_PORT
listen_backlog = 4096
unix_socket_dir = $BENCH_TMP
auth_type = trust
auth_file = $BENCH_TMP/userlist.txt
pool_mode = $mode
max_client_conn = $max_client
default_pool_size = $pool
max_db_connections = 0
server_idle_timeout = 0
logfile = $BENCH_TMP/pgbouncer.log
pidfile = $BENCH_TMP/pgbouncer.pid
log_connections = 0
log_disconnections = 0
admin_users = postgres
ignore_startup_parameters = extra_float_digits
EOF
    if [[ $EUID -eq 0 ]]; then chown postgres: "$ini" "$BENCH_TMP/userlist.txt"; fi
    log "starting pgbouncer ($mode mode, pool $pool, up to $max_client clients) on 127.0.0.1:$BOUNCER_PORT"
    BENCH_BOUNCER_PIDFILE="$BENCH_TMP/pgbouncer.pid"
    # runuser's PAM session resets the open-file limit: set ours again inside.
    # shellcheck disable=SC2016 # expanded by the inner shell
    as_pg sh -c 'ulimit -n "$1" 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec pgbouncer -d -q "$2"' \
        sh "$(ulimit -n)" "$ini" || die "pgbouncer did not start (see $BENCH_TMP/pgbouncer.log)"
    wait_port "$BOUNCER_PORT" 15 || { cat "$BENCH_TMP/pgbouncer.log" >&2 || true; die "pgbouncer is not listening"; }
}

bouncer_pid() {
    [[ -n $BENCH_BOUNCER_PIDFILE && -s $BENCH_BOUNCER_PIDFILE ]] && cat "$BENCH_BOUNCER_PIDFILE"
}

# Client and server connections PgBouncer has for database $1, from its admin
# console (SHOW POOLS): clients active or waiting, then servers active, idle,
# used, being tested or logging in.
bouncer_pool_counts() {
    "$PSQL" -X -At -F ' ' -h 127.0.0.1 -p "$BOUNCER_PORT" -U postgres -d pgbouncer -c "SHOW POOLS" 2>/dev/null |
        awk -v db="$1" '$1 == db { c += $3 + $4; s += $7 + $8 + $9 + $10 + $11 } END { print c + 0, s + 0 }'
}

stop_pgbouncer() {
    local pid i
    pid=$(bouncer_pid) || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    BENCH_BOUNCER_PIDFILE=""
}

# Starts pgshim in front of the cluster (plaintext upstream). Sets PGSHIM_PORT
# and BENCH_PGSHIM_PID. $1 = max_connections (default 1000), $2 = upstream
# port (default: the cluster's; PgBouncer's for a pooled upstream).
start_pgshim() {
    local max_conn=${1:-1000} upstream_port=${2:-$PG_PORT} conf="$BENCH_TMP/pgshim.toml"
    [[ -n ${PGSHIM_PORT:-} ]] || pick_port PGSHIM_PORT
    cat >"$conf" <<EOF
listen = "127.0.0.1:$PGSHIM_PORT"

[upstream]
host = "127.0.0.1"
port = $upstream_port
tls = "disable"
${PGSHIM_UPSTREAM_USER:+user = \"$PGSHIM_UPSTREAM_USER\"}

[limits]
max_connections = $max_conn
shutdown_timeout_ms = 2000
EOF
    log "starting pgshim on 127.0.0.1:$PGSHIM_PORT (upstream port $upstream_port)"
    # A session of its own, as a service runs: with autogroup scheduling a
    # proxy in our session would share one CPU share with pgbench (README).
    setsid "$PGSHIM" serve --config "$conf" >>"$BENCH_TMP/pgshim.log" 2>&1 &
    BENCH_PGSHIM_PID=$!
    if ! wait_port "$PGSHIM_PORT" 15; then
        cat "$BENCH_TMP/pgshim.log" >&2
        die "pgshim is not listening"
    fi
    kill -0 "$BENCH_PGSHIM_PID" 2>/dev/null || { cat "$BENCH_TMP/pgshim.log" >&2; die "pgshim exited"; }
}

stop_pgshim() {
    local pid=$BENCH_PGSHIM_PID i
    [[ -n $pid ]] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 60; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    BENCH_PGSHIM_PID=""
}

# Percentage of CPU time the machine spent idle over the next $1 seconds.
idle_percent() {
    local _cpu user nice sys idle iowait irq softirq steal total1 idle1 total2 idle2
    read -r _cpu user nice sys idle iowait irq softirq steal _ </proc/stat
    total1=$((user + nice + sys + idle + iowait + irq + softirq + steal))
    idle1=$((idle + iowait))
    sleep "$1"
    read -r _cpu user nice sys idle iowait irq softirq steal _ </proc/stat
    total2=$((user + nice + sys + idle + iowait + irq + softirq + steal))
    idle2=$((idle + iowait))
    echo $((100 * (idle2 - idle1) / (total2 - total1 > 0 ? total2 - total1 : 1)))
}

# Warns when something else is using the CPU: on a small machine it skews
# every figure.
warn_if_busy() {
    local idle
    idle=$(idle_percent 2)
    if ((idle < 90)); then
        log "WARNING: the machine is only ${idle}% idle before the benchmark; other processes will skew the results"
        return 1
    fi
    return 0
}

# Resident memory (KiB) of a process: $1 = pid, $2 = field (VmRSS, VmHWM).
proc_kib() {
    local key value _unit
    while read -r key value _unit; do
        if [[ $key == "$2:" ]]; then
            echo "$value"
            return 0
        fi
    done <"/proc/$1/status"
    return 1
}

# Samples VmRSS of $1 every 0.2 s into file $2 (peak KiB) until file $3 exists
# or the process is gone. Run in the background.
rss_sampler() {
    local pid=$1 out=$2 stop=$3 peak=0 v
    while [[ ! -e $stop ]] && v=$(proc_kib "$pid" VmRSS 2>/dev/null); do
        ((v > peak)) && peak=$v
        echo "$peak" >"$out"
        sleep 0.2
    done
}

# Stops the pgshim a script started as `name` (its pid in SHIM_PID[name], its
# log in SHIM_LOG[name], both associative arrays of the caller) and keeps its
# log in $LOG_DIR.
stop_shim() {
    local name=$1 pid=${SHIM_PID[$1]:-} i
    [[ -n $pid ]] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 60; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    forget_pid "$pid"
    cp "${SHIM_LOG[$name]}" "$LOG_DIR/" 2>/dev/null || true
    unset "SHIM_PID[$name]"
}

# Exits with the tail of its log when the pgshim started as `name` has died.
shim_alive() {
    local pid=${SHIM_PID[$1]:-}
    if [[ -z $pid ]] || ! kill -0 "$pid" 2>/dev/null; then
        tail -n 20 "${SHIM_LOG[$1]:-/dev/null}" >&2 || true
        die "pgshim '$1' is not running any more"
    fi
}

# Drops a pid from BENCH_EXTRA_PIDS once it has been waited for.
forget_pid() {
    local keep=() p
    for p in "${BENCH_EXTRA_PIDS[@]}"; do
        [[ $p == "$1" ]] || keep+=("$p")
    done
    BENCH_EXTRA_PIDS=("${keep[@]}")
}

# Stops background processes started by the script, then the services, then
# removes the scratch directory. Safe to call more than once.
bench_cleanup() {
    local pid
    set +e
    for pid in "${BENCH_EXTRA_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null
    done
    for pid in "${BENCH_EXTRA_PIDS[@]}"; do
        wait "$pid" 2>/dev/null
    done
    BENCH_EXTRA_PIDS=()
    stop_pgshim
    stop_pgbouncer
    stop_postgres
    if [[ -n $BENCH_TMP && -d $BENCH_TMP ]]; then
        if [[ -n ${KEEP_TMP:-} ]]; then
            log "keeping $BENCH_TMP (KEEP_TMP set)"
        else
            rm -rf "$BENCH_TMP"
        fi
    fi
    BENCH_TMP=""
}

install_traps() {
    trap bench_cleanup EXIT
    trap 'log "interrupted"; exit 130' INT
    trap 'log "terminated"; exit 143' TERM
    trap 'exit 129' HUP
}
