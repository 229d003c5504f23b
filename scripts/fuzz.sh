#!/usr/bin/env bash
# Runs each cargo-fuzz target in fuzz/ for a bounded time, starting from the
# checked-in seeds (fuzz/seeds/<target>) plus whatever earlier runs found
# (fuzz/corpus/<target>), and fails if any of them crashes. Installs the nightly
# toolchain and cargo-fuzz when missing.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
# FUZZ_SANITIZER=address turns AddressSanitizer on (off by default: pgshim
# forbids unsafe code, and the instrumented build takes far longer).
# FUZZ_BUILD=release builds optimised targets, worth it for long runs; the
# default, an unoptimised build, takes a few minutes instead of a quarter of an
# hour on two cores and is fast enough for CI's short runs.
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-30}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(frontend_framer backend_framer rewrite config)
flags=(-s "${FUZZ_SANITIZER:-none}")
case "${FUZZ_BUILD:-dev}" in
  dev) flags+=(--dev) ;;
  release) flags+=(--release --codegen-units 16) ;;
  *) echo "fuzz: FUZZ_BUILD must be dev or release" >&2; exit 1 ;;
esac

if ! cargo +nightly --version >/dev/null 2>&1; then
  command -v rustup >/dev/null 2>&1 || { echo "fuzz: nightly Rust needed: install rustup from https://rustup.rs" >&2; exit 1; }
  echo "fuzz: installing the nightly toolchain"
  rustup toolchain install nightly --profile minimal
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

# One build for every target (16 codegen units build a release much faster
# than cargo-fuzz's default of one, for slightly slower runs).
cargo +nightly fuzz build "${flags[@]}"
failed=()
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t"
  echo "fuzz: $t for ${secs}s"
  # libFuzzer's progress lines (#123 NEW ...) are left out of the log.
  set +e
  cargo +nightly fuzz run "${flags[@]}" "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
    -max_total_time="$secs" -timeout=60 -rss_limit_mb=2048 -print_final_stats=1 2>&1 \
    | grep -v '^#[0-9]'
  status=${PIPESTATUS[0]}
  set -e
  if [ "$status" -ne 0 ]; then
    echo "fuzz: $t failed (exit $status); the input, when libFuzzer could save it, is in fuzz/artifacts/$t" >&2
    failed+=("$t")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: failed: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz: ok"
