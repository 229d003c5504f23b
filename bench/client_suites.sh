#!/usr/bin/env bash
# Runs client libraries' own test suites twice, against PostgreSQL directly and
# through pgshim, and lists the tests that pass direct but fail through pgshim:
# the way transparency gaps (cancel over TLS, extra errors, early closes) are
# found. Not part of CI: the suites take minutes and need their sources.
#
# Both targets have TLS (a throwaway self-signed certificate), so clients that
# use sslmode=prefer negotiate it with Postgres and with pgshim alike.
#
# Sources are not downloaded: check them out yourself and point at them.
#   PSYCOPG_SRC=path   a psycopg 3 checkout at a release tag (tests/ and
#                      psycopg/ at its top; psycopg-binary of that version is
#                      installed from PyPI).
#                      Runs `pytest tests -m "not timing"` with psycopg[binary]
#                      (which brings its own libpq, 17 or later: the new cancel
#                      API that cancels inside TLS) in a venv under the scratch dir.
#   NODE_PG_SRC=path   a node-postgres checkout. Runs each
#                      packages/pg/test/integration/**/*-tests.js with node, as
#                      its Makefile does, after `npm install` and `tsc --build`
#                      in the checkout.
#   PYTEST_K="expr"    run only the psycopg tests matching `pytest -k expr`
#   PYTEST_ARGS="..."  extra pytest arguments, split on spaces (e.g. "-x --lf")
#   PGSHIM_BIN=path    use this binary instead of `cargo build --release`
#   PG_BINDIR=path     PostgreSQL server binaries to use
#   KEEP_TMP=1         keep the scratch directory (logs, results) after exit
#
# Results: bench/out/client_suites/<suite>-{direct,pgshim}.txt (failing test
# ids, one a line) and <suite>-regressions.txt (failing through pgshim only).
# Exits 1 when there is any such regression.
#
# Example:
#   PSYCOPG_SRC=~/src/psycopg NODE_PG_SRC=~/src/node-postgres bench/client_suites.sh
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[[ -n ${PSYCOPG_SRC:-} || -n ${NODE_PG_SRC:-} ]] ||
    die "set PSYCOPG_SRC and/or NODE_PG_SRC to checkouts of the suites to run"
[[ -z ${PSYCOPG_SRC:-} || -d ${PSYCOPG_SRC}/tests ]] || die "PSYCOPG_SRC=$PSYCOPG_SRC has no tests/"
[[ -z ${NODE_PG_SRC:-} || -d ${NODE_PG_SRC}/packages/pg/test/integration ]] ||
    die "NODE_PG_SRC=$NODE_PG_SRC has no packages/pg/test/integration"

tools=(psql openssl cargo)
[[ -z ${PSYCOPG_SRC:-} ]] || tools+=(python3)
[[ -z ${NODE_PG_SRC:-} ]] || tools+=(node npm)
if [[ $EUID -eq 0 ]]; then tools+=(runuser); fi
check_tools "${tools[@]}"

RESULTS="$OUT_DIR/client_suites"
TEST_DB=client_suites

install_traps
make_tmp
build_pgshim
mkdir -p "$RESULTS"

# A self-signed certificate for 127.0.0.1/localhost, used by both targets.
make_cert() {
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=localhost" \
        -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
        -keyout "$BENCH_TMP/server.key" -out "$BENCH_TMP/server.crt" 2>/dev/null ||
        die "openssl could not make a test certificate"
    chmod 600 "$BENCH_TMP/server.key"
}

# TLS on the cluster, then the suites' database.
prepare_postgres() {
    cp "$BENCH_TMP/server.crt" "$BENCH_TMP/server.key" "$BENCH_PGDATA/"
    if [[ $EUID -eq 0 ]]; then chown postgres: "$BENCH_PGDATA/server.crt" "$BENCH_PGDATA/server.key"; fi
    pg_direct -c "ALTER SYSTEM SET ssl = on" -c "SELECT pg_reload_conf()" >/dev/null
    pg_direct -c "CREATE DATABASE $TEST_DB" >/dev/null
    # psycopg's suite uses these when present; they must exist on both targets.
    pg_direct -d "$TEST_DB" -c "CREATE EXTENSION IF NOT EXISTS hstore" >/dev/null 2>&1 || true
}

# pgshim with client-facing TLS, plaintext upstream (as in the bench).
start_pgshim_tls() {
    local conf="$BENCH_TMP/pgshim.toml"
    pick_port PGSHIM_PORT
    cat >"$conf" <<EOF
listen = "127.0.0.1:$PGSHIM_PORT"

[upstream]
host = "127.0.0.1"
port = $PG_PORT
tls = "disable"

[tls]
cert = "$BENCH_TMP/server.crt"
key = "$BENCH_TMP/server.key"

[limits]
max_connections = 500
EOF
    log "starting pgshim (TLS) on 127.0.0.1:$PGSHIM_PORT"
    "$PGSHIM" serve --config "$conf" >>"$BENCH_TMP/pgshim.log" 2>&1 &
    BENCH_PGSHIM_PID=$!
    wait_port "$PGSHIM_PORT" 15 || { cat "$BENCH_TMP/pgshim.log" >&2; die "pgshim is not listening"; }
}

# Runs psycopg's suite against port $1, writing failing test ids to $2.
run_psycopg() {
    local port=$1 out=$2 venv="$BENCH_TMP/venv" xml="$BENCH_TMP/psycopg-$1.xml"
    if [[ ! -x $venv/bin/pytest ]]; then
        log "installing psycopg's test requirements in $venv"
        local version
        version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$PSYCOPG_SRC/psycopg/pyproject.toml" | head -n 1)
        python3 -m venv "$venv"
        "$venv/bin/pip" install -q "$PSYCOPG_SRC/psycopg[test]" "$PSYCOPG_SRC/psycopg_pool" \
            "psycopg-binary==$version" ||
            die "pip install of psycopg $version's test requirements failed (check out a release tag)"
    fi
    local args=()
    read -r -a args <<<"${PYTEST_ARGS:-}"
    [[ -z ${PYTEST_K:-} ]] || args+=(-k "$PYTEST_K")
    log "psycopg suite on port $port"
    # Failures are what is measured, so pytest's exit status is not.
    (cd "$PSYCOPG_SRC" && PSYCOPG_IMPL=binary \
        PSYCOPG_TEST_DSN="host=127.0.0.1 port=$port user=postgres dbname=$TEST_DB sslmode=prefer" \
        "$venv/bin/pytest" tests -q -o cache_dir="$BENCH_TMP/pytest-cache" -m "not timing" --junitxml="$xml" \
        "${args[@]}" >"$BENCH_TMP/psycopg-$port.log" 2>&1) || true
    grep -q '<testcase' "$xml" 2>/dev/null || { tail -n 30 "$BENCH_TMP/psycopg-$port.log" >&2; die "pytest ran no test"; }
    python3 - "$xml" >"$out" <<'PY'
import sys, xml.etree.ElementTree as ET
for case in ET.parse(sys.argv[1]).iter("testcase"):
    if case.find("failure") is not None or case.find("error") is not None:
        print(f'{case.get("classname")}::{case.get("name")}')
PY
}

# Runs node-postgres's integration files against port $1, writing the failing
# files to $2.
run_node_pg() {
    local port=$1 out=$2 dir="$NODE_PG_SRC/packages/pg" file
    if [[ ! -d $NODE_PG_SRC/node_modules ]]; then
        log "npm install and build in $NODE_PG_SRC"
        (cd "$NODE_PG_SRC" && npm install --silent --ignore-scripts && npx tsc --build) ||
            die "npm install or build failed in $NODE_PG_SRC"
    fi
    log "node-postgres integration suite on port $port"
    : >"$out"
    export PGHOST=127.0.0.1 PGPORT=$port PGUSER=postgres PGDATABASE=$TEST_DB
    while IFS= read -r file; do
        echo "== $file" >>"$BENCH_TMP/node-pg-$port.log"
        if ! (cd "$dir" && timeout 120 node "$file" postgres://) >>"$BENCH_TMP/node-pg-$port.log" 2>&1; then
            echo "$file" >>"$out"
        fi
    done < <(cd "$dir" && find test/integration -name '*-tests.js' | sort)
    unset PGHOST PGPORT PGUSER PGDATABASE
}

# Runs suite $1 on both targets and reports what fails through pgshim only.
compare() {
    local suite=$1 direct="$RESULTS/$1-direct.txt" proxied="$RESULTS/$1-pgshim.txt"
    "run_$suite" "$PG_PORT" "$direct"
    "run_$suite" "$PGSHIM_PORT" "$proxied"
    sort -u "$direct" -o "$direct"
    sort -u "$proxied" -o "$proxied"
    comm -13 "$direct" "$proxied" >"$RESULTS/$suite-regressions.txt"
    log "$suite: $(wc -l <"$direct") failing direct, $(wc -l <"$proxied") through pgshim," \
        "$(wc -l <"$RESULTS/$suite-regressions.txt") only through pgshim"
    sed 's/^/  only through pgshim: /' "$RESULTS/$suite-regressions.txt" >&2
}

make_cert
start_postgres 300
prepare_postgres
start_pgshim_tls

suites=()
[[ -z ${PSYCOPG_SRC:-} ]] || suites+=(psycopg)
[[ -z ${NODE_PG_SRC:-} ]] || suites+=(node_pg)
status=0
for suite in "${suites[@]}"; do
    compare "$suite"
    if [[ -s $RESULTS/$suite-regressions.txt ]]; then status=1; fi
done
log "results in $RESULTS (pgshim's log: $BENCH_TMP/pgshim.log, kept with KEEP_TMP=1)"
exit "$status"
