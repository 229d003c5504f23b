#!/usr/bin/env bash
# Installs what pgshim's tests and benchmarks need on Debian/Ubuntu: the
# PostgreSQL server binaries (the tests start throwaway clusters from them),
# psql and pgbench, and PgBouncer for the benchmark. Safe to rerun.
set -euo pipefail

need=()
pg_bin=""
for d in /usr/lib/postgresql/*/bin; do [ -x "$d/postgres" ] && pg_bin="$d"; done
[ -n "$pg_bin" ] || command -v postgres >/dev/null 2>&1 || need+=(postgresql)
command -v psql >/dev/null 2>&1 || need+=(postgresql-client)
command -v jq >/dev/null 2>&1 || need+=(jq)
command -v pgbouncer >/dev/null 2>&1 || [ "${PGSHIM_SKIP_PGBOUNCER:-}" = 1 ] || need+=(pgbouncer)
command -v cargo >/dev/null 2>&1 || { echo "setup: cargo not found: install Rust from https://rustup.rs" >&2; exit 1; }

if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup: installing ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
echo "setup: ok"
