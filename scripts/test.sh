#!/usr/bin/env bash
# Runs jetflow's tests: installs the NATS server they start (scripts/install-nats.sh), then the
# whole workspace's unit and integration tests against real nats-server processes.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/install-nats.sh
export JETFLOW_NATS_SERVER="$root/.tools/bin/nats-server"
# The end-to-end tests (e2e/local) run the jetflow-worker binary as separate processes; build
# it first (same profile as the tests, so nothing is compiled twice).
cargo build --locked -p jetflow-worker
# --no-fail-fast: one failing test binary must not hide the results of the others.
cargo test --workspace --locked --no-fail-fast "$@"
