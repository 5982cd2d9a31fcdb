#!/usr/bin/env bash
# Runs jetflow's tests: installs the NATS server they start (scripts/install-nats.sh), then the
# whole workspace's unit and integration tests against real nats-server processes.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/install-nats.sh
export JETFLOW_NATS_SERVER="$root/.tools/bin/nats-server"
cargo test --workspace --locked "$@"
