#!/usr/bin/env bash
# Checks pgshim's minimum supported Rust version (`rust-version` in Cargo.toml):
# 1. no locked dependency built for Linux declares a higher `rust-version`
#    (cheap, needs only the lockfile and the registry cache);
# 2. `cargo +MSRV check` passes, when rustup can provide that toolchain. Without
#    it (offline machine, no rustup) the step is skipped with a note, and step 1
#    alone guards the declared version.
set -euo pipefail
cd "$(dirname "$0")/.."

meta=$(cargo metadata --format-version 1 --locked --filter-platform x86_64-unknown-linux-gnu)
ours=$(jq -r '.packages[] | select(.name == "pgshim") | .rust_version' <<<"$meta")
[ -n "$ours" ] && [ "$ours" != null ] || { echo "msrv: Cargo.toml has no rust-version" >&2; exit 1; }

# Versions compare numerically field by field; "1.88" is "1.88.0".
above=$(jq -r --arg ours "$ours" '
  def v: split(".") | map(tonumber) | . + [0, 0, 0] | .[0:3];
  .packages[] | select(.rust_version != null)
  | select((.rust_version | v) > ($ours | v))
  | "\(.name) \(.version) needs Rust \(.rust_version)"' <<<"$meta")
if [ -n "$above" ]; then
  echo "msrv: rust-version is $ours in Cargo.toml, but locked dependencies need more:" >&2
  echo "$above" >&2
  echo "msrv: raise rust-version (or pin these crates lower with cargo update --precise)" >&2
  exit 1
fi
echo "msrv: no locked dependency needs more than Rust $ours"

if ! command -v rustup >/dev/null 2>&1; then
  echo "msrv: rustup not found; skipping cargo +$ours check"
  exit 0
fi
if ! rustup run "$ours" rustc --version >/dev/null 2>&1 &&
  ! rustup toolchain install "$ours" --profile minimal >/dev/null 2>&1; then
  echo "msrv: toolchain $ours cannot be installed here; skipping cargo +$ours check"
  exit 0
fi
# A separate target directory: another toolchain's artifacts would evict the
# stable ones that the rest of CI reuses.
CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/msrv" cargo "+$ours" check --locked --all-targets
echo "msrv: cargo +$ours check passed"
