#!/usr/bin/env bash
# A chaos run: one pipeline on the local control plane moves 1,000,000 messages while its
# workers get SIGKILL every few seconds, nats-server is killed and restarted three times and the
# pipeline is scaled between 1 and 3 workers. Prints the messages lost and duplicated and exits
# non-zero unless both are 0. Not part of the test command (it takes several minutes).
#
#   ./scripts/chaos.sh                       # the full run
#   ./scripts/chaos.sh --messages 100000     # a shorter one; --help lists the knobs
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/install-nats.sh
bash scripts/install-chart-tools.sh
export JETFLOW_NATS_SERVER="$root/.tools/bin/nats-server"
# The same (debug) build as the tests, so nothing is compiled twice.
cargo build --locked -p jetflow-worker -p jetflow-operator -p jetflow-devcluster \
  -p jetflow-e2e-cluster --bin jetflow-chaos
target="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
exec "$target/debug/jetflow-chaos" "$@"
