#!/usr/bin/env bash
# Runs every Voxanne test on a fresh Debian machine: installs what the tests need (build tools
# for whisper.cpp, espeak-ng and Festival for speech, PostgreSQL server binaries for throwaway
# test clusters, Chromium and chromedriver for the dashboard's browser test), fetches the
# offline models (`voxanne models fetch`, checksummed, into VOXANNE_MODELS_DIR, default
# ~/.cache/voxanne/models), then `cargo test --workspace`.
# Tests that read ../shared (reference vectors) skip cleanly when it is absent; tests that need
# models do not skip: they get them here.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/deps.sh test
# deps.sh installed Chromium: the dashboard's browser test must run, never skip.
export VOXANNE_REQUIRE_BROWSER=1

export VOXANNE_MODELS_DIR="${VOXANNE_MODELS_DIR:-$HOME/.cache/voxanne/models}"
cargo run --locked -q -p api -- models fetch

log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole workspace (cargo prints one per test binary).
sed -nE 's/^test result: [A-Za-z]+\. ([0-9]+) passed; ([0-9]+) failed.*/\1 \2/p' "$log" |
    awk '{p += $1; f += $2} END {printf "tests: %d passed, %d failed\n", p, f}'
exit "$status"
