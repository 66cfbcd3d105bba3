#!/usr/bin/env bash
# The whole test suite: formatting, lints, every Rust test (unit, loader corpus,
# desired-state round trip, real-engine reconciler, jobs), and the Prometheus rule
# unit tests. Needs a Docker engine and the Rust toolchain; tests/setup.sh installs (or
# names) everything else.
set -euo pipefail
cd "$(dirname "$0")/.."

bash tests/setup.sh

cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
# Known advisories in Cargo.lock fail the run (offline, against the local RustSec copy).
db=$(bash tests/advisory-db.sh)
if [ -n "$db" ]; then
  cargo audit --db "$db" --no-fetch
else
  echo "no RustSec advisory database found (set OBSD_ADVISORY_DB); cargo audit skipped"
fi
# Tests share one Docker engine: each uses its own project name, so they may run in
# parallel, but 2 threads keep a 2-core machine responsive.
cargo test --all-targets -- --test-threads=2
bash tests/promtool/run.sh
echo "all test suites passed"
