#!/usr/bin/env bash
# pgshim's memory per idle connection: opens IDLE_CONNS (10,000) connections
# through pgshim with bench/idle_conns.py (full startup and login, then idle),
# and reports pgshim's RSS before and with them open, and KiB per connection
# (target: under 100 KiB). Writes bench/out/idle.md.
#
# PostgreSQL cannot hold 10,000 backends on a small machine (a few MiB each),
# so pgshim's upstream here is PgBouncer in transaction pooling mode with a
# small pool: every pgshim connection still has its own upstream socket and a
# completed login, as against Postgres, but PgBouncer multiplexes them onto a
# few backends. pgshim's RSS does not depend on what answers on its upstream
# socket. IDLE_VIA=postgres connects pgshim to the cluster instead (one backend
# per connection; keep IDLE_CONNS near 1000 then). The open-file limit is
# raised to two descriptors per connection plus headroom (the hard limit too,
# as root).
#
# This is the idle test of bench/memory.sh run alone; its settings apply:
#   IDLE_CONNS=10000  IDLE_VIA=pgbouncer  PGSHIM_BIN  PG_BINDIR  KEEP_TMP
set -euo pipefail
TESTS=idle exec "$(dirname "${BASH_SOURCE[0]}")/memory.sh"
