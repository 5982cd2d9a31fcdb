#!/usr/bin/env bash
# jetflow end to end on a real Kubernetes cluster (kind).
#
# It creates a kind cluster, builds the jetflow image (Dockerfile) and loads it into the
# cluster, installs NATS with JetStream through the official NATS Helm chart, installs
# jetflow's chart, then runs each example of examples/ in a namespace of its own: it applies
# the manifest, feeds input through nats-box, waits on the resources' status conditions,
# checks the output streams or subjects and the Pipeline status, and deletes the namespace.
# On failure it collects logs, descriptions and events into $ARTIFACTS. The cluster is
# deleted at the end unless KEEP=1.
#
# Where it runs: anywhere with Docker, kind, helm and kubectl (a developer laptop, the
# GitHub-hosted runner of .github/workflows/e2e-kind.yml). It cannot run on a machine without
# a container engine; it says so and exits 2 before doing anything.
#
# Environment:
#   CLUSTER=jetflow-e2e     kind cluster name (reused if it exists)
#   KEEP=1                  keep the cluster afterwards
#   EXAMPLES="a b"          run only these examples (file names without .yaml)
#   ARTIFACTS=dir           where logs go on failure (default e2e/kind/artifacts)
#   IMAGE=jetflow:e2e       image name built and loaded
#   KIND_NODE_IMAGE=...     node image (default kindest/node:v1.32.2, the version the chart
#                           checks validate against)
#   TIMEOUT=180s            per wait
#   NATS_CHART_VERSION=...  the NATS chart version (default 1.2.8, a 1.x chart the values in
#                           nats-values.yaml are written for; empty: the repository's latest)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
here="$root/e2e/kind"
CLUSTER="${CLUSTER:-jetflow-e2e}"
KEEP="${KEEP:-0}"
ARTIFACTS="${ARTIFACTS:-$here/artifacts}"
IMAGE="${IMAGE:-jetflow:e2e}"
KIND_NODE_IMAGE="${KIND_NODE_IMAGE:-kindest/node:v1.32.2}"
TIMEOUT="${TIMEOUT:-180s}"
NATS_CHART_VERSION="${NATS_CHART_VERSION-1.2.8}"  # set to empty for the repository's latest

log() { printf '\n=== %s\n' "$*" >&2; }
die() { printf 'e2e-kind: %s\n' "$*" >&2; exit 1; }

# --- preflight: fail fast, before touching anything ------------------------------------------
missing=()
for tool in docker kind helm kubectl jq; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
  printf 'e2e-kind: missing %s.\n' "${missing[*]}" >&2
  printf 'e2e-kind: this script needs Docker, kind, helm, kubectl and jq; it runs in CI on GitHub-hosted\n' >&2
  printf 'e2e-kind: runners (.github/workflows/e2e-kind.yml) and on machines with a container engine.\n' >&2
  printf 'e2e-kind: without one, run the local end-to-end tests instead: ./scripts/test.sh\n' >&2
  exit 2
fi
if ! docker info >/dev/null 2>&1; then
  echo "e2e-kind: docker is installed but its daemon is not reachable (is Docker running, may this user use it?)" >&2
  exit 2
fi

seconds() { local t="${1%s}"; echo "$t"; }
deadline_after() { echo $(( $(date +%s) + $(seconds "$1") )); }

# Polls a check until it succeeds or the timeout passes; each round runs the check, so the
# wait ends as soon as the condition holds (never a bare sleep).
wait_until() {
  local what="$1" timeout="$2"; shift 2
  local deadline; deadline="$(deadline_after "$timeout")"
  until "$@"; do
    if (( $(date +%s) > deadline )); then
      die "timed out after $timeout waiting for $what"
    fi
    sleep 2
  done
}

nats_box() { kubectl -n nats exec deploy/nats-box -- "$@"; }

stream_messages() {
  nats_box nats stream info "$1" --json 2>/dev/null | jq -r '.state.messages'
}

stream_has() { # stream expected-count: exactly
  local n; n="$(stream_messages "$1")" || return 1
  [[ "$n" == "$2" ]]
}

stream_at_least() {
  local n; n="$(stream_messages "$1")" || return 1
  [[ -n "$n" && "$n" -ge "$2" ]]
}

# --- failure reporting and cleanup -------------------------------------------------------------
collect() {
  mkdir -p "$ARTIFACTS"
  echo "e2e-kind: collecting logs into $ARTIFACTS" >&2
  {
    kubectl get nodes -o wide
    kubectl get all,streams.jetflow.io,pipelines.jetflow.io,configmaps,leases -A -o wide
  } >"$ARTIFACTS/resources.txt" 2>&1 || true
  kubectl get events -A --sort-by=.lastTimestamp >"$ARTIFACTS/events.txt" 2>&1 || true
  kubectl describe streams.jetflow.io,pipelines.jetflow.io -A >"$ARTIFACTS/describe-jetflow.txt" 2>&1 || true
  kubectl get streams.jetflow.io,pipelines.jetflow.io -A -o yaml >"$ARTIFACTS/jetflow-resources.yaml" 2>&1 || true
  kubectl describe pods -A >"$ARTIFACTS/describe-pods.txt" 2>&1 || true
  local ns pod
  while read -r ns pod; do
    kubectl -n "$ns" logs "$pod" --all-containers --prefix >"$ARTIFACTS/logs-$ns-$pod.txt" 2>&1 || true
    kubectl -n "$ns" logs "$pod" --all-containers --prefix --previous >"$ARTIFACTS/logs-$ns-$pod-previous.txt" 2>/dev/null || rm -f "$ARTIFACTS/logs-$ns-$pod-previous.txt"
  done < <(kubectl get pods -A --no-headers -o custom-columns=NS:.metadata.namespace,NAME:.metadata.name 2>/dev/null | grep -v '^kube-system' || true)
  nats_box nats stream report >"$ARTIFACTS/nats-streams.txt" 2>&1 || true
  nats_box nats consumer report --all >"$ARTIFACTS/nats-consumers.txt" 2>&1 || true
}

finish() {
  local rc=$?
  jobs -p | xargs -r kill 2>/dev/null || true
  if ((rc != 0)); then
    echo "e2e-kind: FAILED (exit $rc)" >&2
    collect
  fi
  if [[ "$KEEP" == "1" ]]; then
    echo "e2e-kind: keeping cluster $CLUSTER (kubectl config use-context kind-$CLUSTER)" >&2
  else
    kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
  fi
  exit "$rc"
}
trap finish EXIT

# --- cluster, images, NATS, jetflow --------------------------------------------------------------
log "cluster $CLUSTER"
if ! kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  kind create cluster --name "$CLUSTER" --image "$KIND_NODE_IMAGE" --config "$here/kind-config.yaml" --wait 120s
fi
kubectl config use-context "kind-$CLUSTER" >/dev/null

log "image $IMAGE"
docker build -t "$IMAGE" "$root"
kind load docker-image "$IMAGE" --name "$CLUSTER"

log "NATS with JetStream (official chart nats/nats ${NATS_CHART_VERSION:-latest})"
helm repo add nats https://nats-io.github.io/k8s/helm/charts/ --force-update >/dev/null
helm upgrade --install nats nats/nats ${NATS_CHART_VERSION:+--version "$NATS_CHART_VERSION"} \
  --namespace nats --create-namespace \
  -f "$here/nats-values.yaml" --wait --timeout 5m
kubectl -n nats rollout status deploy/nats-box --timeout="$TIMEOUT"
kubectl -n nats wait --for=condition=Ready pod -l app.kubernetes.io/name=nats --timeout="$TIMEOUT"

log "jetflow chart"
repo="${IMAGE%:*}" tag="${IMAGE##*:}"
helm upgrade --install jetflow "$root/charts/jetflow" \
  --namespace jetflow-system --create-namespace \
  --set image.repository="$repo" --set image.tag="$tag" --set image.pullPolicy=Never \
  --set worker.image.repository="$repo" --set worker.image.tag="$tag" \
  --set replicaCount=2 \
  --wait --timeout 5m
kubectl -n jetflow-system rollout status deploy/jetflow --timeout="$TIMEOUT"
kubectl wait --for=condition=Established crd/pipelines.jetflow.io crd/streams.jetflow.io --timeout=60s
# Two replicas: exactly one holds the leader Lease.
wait_until "the operator's leader Lease" 60s \
  bash -c "kubectl -n jetflow-system get leases -o jsonpath='{.items[*].spec.holderIdentity}' | grep -q jetflow"

# --- examples ---------------------------------------------------------------------------------------
# Each example runs in a namespace of its own, against a NATS server cleaned of the previous
# example's streams (the examples keep their streams on delete, the default deletionPolicy).
ns=""
start_example() {
  local name="$1"
  ns="e2e-$name"
  log "example $name (namespace $ns)"
  kubectl create namespace "$ns"
}

apply_example() {
  kubectl -n "$ns" apply -f "$root/examples/$1.yaml"
  kubectl -n "$ns" wait --for=condition=Ready stream --all --timeout="$TIMEOUT"
}

wait_pipeline_ready() {
  kubectl -n "$ns" wait --for=condition=Ready "pipeline/$1" --timeout="$TIMEOUT"
}

# Status as `kubectl get pipelines` shows it, plus what the checks below need.
check_pipeline_status() { # pipeline expected-replicas
  local p="$1" replicas="$2"
  kubectl -n "$ns" get pipelines -o wide
  wait_until "pipeline/$p readyReplicas=$replicas" "$TIMEOUT" \
    bash -c "[[ \$(kubectl -n $ns get pipeline/$p -o jsonpath='{.status.readyReplicas}') == $replicas ]]"
  wait_until "pipeline/$p's first checkpoint" "$TIMEOUT" \
    bash -c "[[ -n \$(kubectl -n $ns get pipeline/$p -o jsonpath='{.status.lastCheckpoint.id}') ]]"
  [[ "$(kubectl -n "$ns" get "pipeline/$p" -o jsonpath='{.status.phase}')" == Running ]] \
    || die "pipeline/$p is not Running"
}

end_example() {
  kubectl delete namespace "$ns" --wait=true --timeout="$TIMEOUT"
  local s
  for s in $(nats_box nats stream ls --names 2>/dev/null); do
    nats_box nats stream rm -f "$s" >/dev/null
  done
}

publish() { # subject count [body template; nats CLI templates such as {{ Count }}]
  local body="${3:-}"
  [[ -n "$body" ]] || body='{"n": {{ Count }}}'
  nats_box nats pub "$1" "$body" --count "$2" >/dev/null
}

example_passthrough() {
  apply_example passthrough
  publish orders.eu.order 100
  publish orders.us.order 100
  wait_pipeline_ready orders-copy
  wait_until "orders-copy to hold 200 messages" "$TIMEOUT" stream_has orders-copy 200
  check_pipeline_status orders-copy 1
  # After a checkpoint, still exactly 200: nothing was written twice.
  stream_has orders-copy 200 || die "orders-copy holds $(stream_messages orders-copy), not 200"
}

publish_readings() {
  publish sensors.temperature.berlin 10
  publish sensors.humidity.berlin 10
  stream_at_least sensor-readings 20
}

example_core_capture() {
  apply_example core-capture
  wait_pipeline_ready sensor-capture
  check_pipeline_status sensor-capture 2
  # At most once: readings published before the subscriptions are live are lost, so publish
  # until they arrive, then check that every arriving reading was stored under archive.
  wait_until "sensor-readings to capture readings" "$TIMEOUT" publish_readings
  nats_box nats stream subjects sensor-readings --json | jq -e 'has("archive.sensors.temperature.berlin") and has("archive.sensors.humidity.berlin")' >/dev/null \
    || die "sensor-readings lacks the archive.sensors.* subjects"
}

fanout_out=""
probe_alert() {
  nats_box nats pub alerts.payments.critical '{"alert": "probe"}' >/dev/null
  grep -q probe "$fanout_out"
}
heard_search_alerts() {
  [[ "$(grep -c search "$fanout_out")" -ge 10 ]]
}

example_fanout_core() {
  apply_example fanout-core
  wait_pipeline_ready alerts-fanout
  local out="$ARTIFACTS/fanout-notify.txt"
  mkdir -p "$ARTIFACTS"
  : >"$out"
  nats_box nats sub 'notify.>' --raw >"$out" 2>/dev/null &
  local sub=$!
  # start: New, and a subscriber that may not be listening yet: publish until it hears one.
  fanout_out="$out"
  wait_until "an alert on notify.payments.critical" "$TIMEOUT" probe_alert
  publish alerts.search.warning 10 '{"alert": "search {{ Count }}"}'
  wait_until "10 alerts on notify.search.warning" "$TIMEOUT" heard_search_alerts
  kill "$sub" 2>/dev/null || true
  check_pipeline_status alerts-fanout 1
}

example_backfill_bounded() {
  # The source stream exists with 500 clicks before the Pipeline: the operator adopts it and
  # the bounded run copies exactly those 500, then succeeds.
  nats_box nats stream add clicks --subjects 'clicks.>' --storage file --defaults >/dev/null
  publish clicks.web 500
  apply_example backfill-bounded
  kubectl -n "$ns" wait --for=jsonpath='{.status.phase}'=Succeeded pipeline/clicks-backfill --timeout="$TIMEOUT"
  stream_has clicks-backfill 500 || die "clicks-backfill holds $(stream_messages clicks-backfill), not 500"
  kubectl -n "$ns" get pipelines -o wide
}

example_parallel_six_splits() {
  apply_example parallel-six-splits
  local region
  for region in eu us apac latam mea anz; do publish "transfers.$region.t" 50; done
  wait_pipeline_ready transfers-ledger
  wait_until "transfers-ledger to hold 300 messages" "$TIMEOUT" stream_has transfers-ledger 300
  check_pipeline_status transfers-ledger 3
  local splits owners
  splits="$(kubectl -n "$ns" get pipeline/transfers-ledger -o json | jq '.status.splits | length')"
  owners="$(kubectl -n "$ns" get pipeline/transfers-ledger -o json | jq '[.status.splits[].owner] | unique | length')"
  [[ "$splits" == 6 && "$owners" == 3 ]] || die "expected 6 splits over 3 workers, status shows $splits splits over $owners owners"
  stream_has transfers-ledger 300 || die "transfers-ledger holds $(stream_messages transfers-ledger), not 300"
}

example_credentials_secret() {
  apply_example credentials-secret
  publish invoices.acme.2026 100
  wait_pipeline_ready invoices-archive
  wait_until "invoices-archive to hold 100 messages" "$TIMEOUT" stream_has invoices-archive 100
  check_pipeline_status invoices-archive 1
}

example_enrich_jq() {
  apply_example enrich-jq
  publish orders.eu.created 10 '{"order_id": "o-{{ Count }}", "qty": 2, "price": 2.5, "status": "paid", "customer": {"name": "Ada"}}'
  publish orders.us.created 5 '{"order_id": "p-{{ Count }}", "qty": 1, "price": 9, "status": "pending", "customer": {"name": "Bob"}}'
  wait_pipeline_ready orders-enrich
  wait_until "orders-summary to hold the 10 paid orders" "$TIMEOUT" stream_has orders-summary 10
  check_pipeline_status orders-enrich 1
  nats_box nats stream get orders-summary --last-for summary.orders.eu.created --json \
    | jq -e '.data | @base64d | fromjson | .total == 5 and .customer == "Ada" and .region == "eu"' >/dev/null \
    || die "orders-summary does not hold the enriched order"
  stream_has orders-summary 10 || die "orders-summary holds $(stream_messages orders-summary), not 10"
}

example_route_by_field() {
  apply_example route-by-field
  publish events.auth 6 '{"tenant": "acme", "type": "login", "n": {{ Count }}}'
  publish events.billing 3 '{"tenant": "globex", "type": "invoice", "n": {{ Count }}}'
  publish events.auth 1 '{"type": "login"}'
  wait_pipeline_ready events-by-tenant
  wait_until "tenant-events to hold 9 routed events" "$TIMEOUT" stream_has tenant-events 9
  wait_until "events-dlq to hold the unroutable event" "$TIMEOUT" stream_has events-dlq 1
  nats_box nats stream subjects tenant-events --json \
    | jq -e '."tenants.acme.auth" == 6 and ."tenants.globex.billing" == 3' >/dev/null \
    || die "tenant-events subjects are not tenants.<tenant>.<service>"
  check_pipeline_status events-by-tenant 1
}

example_dead_letter() {
  apply_example dead-letter
  publish payments.card 8 '{"id": "p-{{ Count }}", "amount": 12.5}'
  publish payments.card 2 '{"id": "q-{{ Count }}", "amount": "12,50"}'
  wait_pipeline_ready payments-cents
  wait_until "payments-cents to hold 8 payments" "$TIMEOUT" stream_has payments-cents 8
  wait_until "payments-dlq to hold 2 dead letters" "$TIMEOUT" stream_has payments-dlq 2
  nats_box nats stream get payments-dlq --last-for dlq.payments --json \
    | jq -e '.hdrs | @base64d | test("Jetflow-Error-Step: amount-in-cents")' >/dev/null \
    || die "the dead letter lacks its Jetflow-Error-Step header"
  check_pipeline_status payments-cents 1
}

# Examples without a dedicated check above: the Streams and the Pipeline become Ready and the
# Pipeline takes a checkpoint.
example_generic() {
  local name="$1" pipeline
  apply_example "$name"
  for pipeline in $(kubectl -n "$ns" get pipelines -o jsonpath='{.items[*].metadata.name}'); do
    wait_pipeline_ready "$pipeline"
    check_pipeline_status "$pipeline" "$(kubectl -n "$ns" get "pipeline/$pipeline" -o jsonpath='{.spec.parallelism}')"
  done
}

if [[ -n "${EXAMPLES:-}" ]]; then
  read -r -a selected <<<"$EXAMPLES"
else
  selected=()
  for f in "$root"/examples/*.yaml; do selected+=("$(basename "$f" .yaml)"); done
fi
passed=0
for name in "${selected[@]}"; do
  start_example "$name"
  fn="example_${name//-/_}"
  if declare -F "$fn" >/dev/null; then "$fn"; else example_generic "$name"; fi
  end_example
  passed=$((passed + 1))
  echo "e2e-kind: example $name passed" >&2
done

log "done"
echo "e2e-kind: $passed passed, 0 failed"
