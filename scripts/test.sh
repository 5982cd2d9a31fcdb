#!/usr/bin/env bash
# Runs jetflow's tests: installs the NATS server they start (scripts/install-nats.sh) and the
# Helm SDK the cluster tests render the chart with (scripts/install-chart-tools.sh), then the
# whole workspace's unit, integration and end-to-end tests against real nats-server processes,
# the latter on the local control plane (e2e/cluster).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/install-nats.sh
bash scripts/install-chart-tools.sh
export JETFLOW_NATS_SERVER="$root/.tools/bin/nats-server"
# The end-to-end tests run the binaries as separate processes: e2e/local the worker, e2e/cluster
# the local control plane, which runs the operator and the workers as pods. Build them first
# (same profile as the tests, so nothing is compiled twice).
cargo build --locked -p jetflow-worker -p jetflow-operator -p jetflow-devcluster -p kubectl-jetflow
# --no-fail-fast: one failing test binary must not hide the results of the others.
cargo test --workspace --locked --no-fail-fast "$@"
