#!/usr/bin/env bash
# Checks dependencies against deny.toml: licenses, banned sources, duplicate
# versions (warnings), and RustSec advisories when the advisory database can be
# had. The database is a git clone from GitHub; on a machine that reaches only
# the package registries it cannot be fetched, so advisories are skipped with a
# note (set PGSHIM_DENY_ADVISORIES=1 to make that an error instead).
# cargo-deny is installed from crates.io when missing (a source build, several
# minutes on two cores: about 15 with CARGO_BUILD_JOBS=1 on a busy machine; CI
# should cache ~/.cargo/bin).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo deny --version >/dev/null 2>&1; then
  echo "deny: installing cargo-deny (builds from source)"
  cargo install cargo-deny --locked --version "^0.20"
fi

cargo deny check --hide-inclusion-graph licenses bans sources

if timeout 120 cargo deny fetch db >/dev/null 2>&1; then
  cargo deny check --disable-fetch advisories
elif [ "${PGSHIM_DENY_ADVISORIES:-}" = 1 ]; then
  echo "deny: cannot fetch the RustSec advisory database" >&2
  exit 1
else
  echo "deny: advisory database unreachable; skipping advisories (licenses, bans and sources passed)"
fi
