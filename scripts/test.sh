#!/usr/bin/env bash
# The project's test command (README): every crate's tests, release mode (the oracle tests are
# numeric and slow in debug). GPU tests skip when no GPU is present; run them on a GPU machine with
# scripts/gpu-tests.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --release "$@"
