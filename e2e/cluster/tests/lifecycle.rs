//! A pipeline's life in a cluster, as a user and the cluster put it through it: deleted and
//! applied again, reset, suspended and resumed, scaled with traffic flowing, a worker killed,
//! the operator killed and its Lease taken over, deleted for good, and a wrong manifest refused
//! at `kubectl apply`. All on the local control plane with the real operator, worker pods and a
//! real nats-server; every message is checked for loss and duplicates.

use std::collections::BTreeMap;
use std::path::Path;

use jetflow_e2e_cluster::nats::{self, Traffic, publish_orders};
use jetflow_e2e_cluster::{Cluster, OPERATOR_NAMESPACE, Options, TIMEOUT, metric_sum};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::ListParams;

const NS: &str = "shop";
const PIPELINE: &str = "orders-copy";
const SELECTOR: &str = "jetflow.io/pipeline=orders-copy";

/// Waits until the sink holds every one of `expected` and checks each exactly once.
async fn assert_exactly_once(
    cluster: &Cluster,
    js: &async_nats::jetstream::Context,
    expected: &[u64],
) {
    cluster
        .assert_exactly_once(js, "orders-copy", expected)
        .await;
}

/// Waits until the Pipeline's committed positions cover `seqs`' last message per split.
async fn wait_committed_through(cluster: &Cluster, last: u64) {
    cluster
        .wait_pipeline(NS, PIPELINE, &format!("a checkpoint through {last}"), |p| {
            p.status.as_ref().is_some_and(|s| {
                !s.splits.is_empty()
                    && s.splits.iter().map(|s| s.position).max() >= Some(last)
                    && s.last_checkpoint.is_some()
            })
        })
        .await;
}

/// Messages read from the source by the pipeline's running workers (their `/metrics`).
async fn messages_read(cluster: &Cluster) -> f64 {
    let mut total = 0.0;
    for (pod, _) in cluster.pods(NS, SELECTOR).await {
        let metrics = cluster
            .pod_metrics(NS, &pod)
            .await
            .unwrap_or_else(|| panic!("metrics of {pod}\n{}", cluster.diagnostics()));
        total += metric_sum(
            &metrics,
            "jetflow_worker_messages_total",
            &[r#"direction="in""#],
        );
    }
    total
}

async fn passthrough(cluster: &Cluster) {
    cluster.apply(NS, &Cluster::example("passthrough"));
    cluster.wait_condition(NS, PIPELINE, "Ready", "True").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_deleted_and_applied_again_resumes_from_its_checkpoint() {
    let cluster = Cluster::start().await;
    passthrough(&cluster).await;
    let js = cluster.nats.jetstream().await;
    let mut expected = publish_orders(&js, 0, 200).await;
    assert_exactly_once(&cluster, &js, &expected).await;
    wait_committed_through(&cluster, *expected.last().unwrap()).await;

    cluster.kubectl_ok(&["delete", "pipeline", PIPELINE, "-n", NS, "--wait=true"]);
    cluster
        .wait_for("the workers to go", TIMEOUT, || async {
            cluster.pods(NS, SELECTOR).await.is_empty().then_some(())
        })
        .await;
    expected.extend(publish_orders(&js, 200, 100).await);
    passthrough(&cluster).await;
    assert_exactly_once(&cluster, &js, &expected).await;
    // The new workers' checkpoints are committed (not refused as stale).
    wait_committed_through(&cluster, *expected.last().unwrap()).await;
    // Resumed from the checkpoint: the new workers read only what came after it.
    let read = messages_read(&cluster).await;
    assert_eq!(
        read, 100.0,
        "the new workers read only the 100 new messages"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_stream_deleted_and_recreated_is_read_from_its_start_and_reported() {
    let cluster = Cluster::start().await;
    passthrough(&cluster).await;
    let js = cluster.nats.jetstream().await;
    let first = publish_orders(&js, 0, 100).await;
    assert_exactly_once(&cluster, &js, &first).await;
    wait_committed_through(&cluster, *first.last().unwrap()).await;

    // Deleted behind the operator's back: its Stream reconciler creates it again, empty, and
    // the new stream counts its sequences from 1 again.
    js.delete_stream("orders").await.unwrap();
    cluster
        .wait_for(
            "the operator to recreate the source stream",
            TIMEOUT,
            || {
                let js = js.clone();
                async move { js.get_stream("orders").await.ok().map(|_| ()) }
            },
        )
        .await;
    let second = publish_orders(&js, 100, 150).await;
    assert_eq!(second.first(), Some(&1), "the new stream starts at 1");
    nats::wait_for_count(&js, "orders-copy", 250, TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.diagnostics()));
    let out = nats::messages(&js, "orders-copy").await.unwrap();
    let mut copies: BTreeMap<String, usize> = BTreeMap::new();
    for m in &out {
        *copies.entry(m.text()).or_default() += 1;
    }
    for i in 0..250 {
        let order = format!(r#"{{"order":{i}}}"#);
        assert_eq!(copies.get(&order), Some(&1), "order {i} in the sink once");
    }
    cluster
        .wait_pipeline(NS, PIPELINE, "Degraded SourceStreamRecreated", |p| {
            p.status.as_ref().is_some_and(|s| {
                s.conditions.iter().any(|c| {
                    c.type_ == "Degraded"
                        && c.status == "True"
                        && c.reason == "SourceStreamRecreated"
                }) && s
                    .splits
                    .iter()
                    .all(|split| split.stream_recreated.is_some())
            })
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_starts_afresh_and_the_old_workers_cannot_write_old_positions_back() {
    let cluster = Cluster::start().await;
    passthrough(&cluster).await;
    let js = cluster.nats.jetstream().await;
    let mut expected = publish_orders(&js, 0, 200).await;
    assert_exactly_once(&cluster, &js, &expected).await;
    wait_committed_through(&cluster, *expected.last().unwrap()).await;
    let old_pods = cluster.pods(NS, SELECTOR).await;

    cluster.kubectl_ok(&[
        "annotate",
        "pipeline",
        PIPELINE,
        "-n",
        NS,
        "jetflow.io/reset=2",
        "--overwrite",
    ]);
    // New workers replace the old ones and read the stream from its start again.
    cluster
        .wait_for("the workers to be replaced", TIMEOUT, || async {
            let pods = cluster.pods(NS, SELECTOR).await;
            (!pods.is_empty() && pods.iter().all(|p| !old_pods.contains(p))).then_some(())
        })
        .await;
    expected.extend(publish_orders(&js, 200, 50).await);
    cluster
        .wait_for(
            "the new workers to read everything again",
            TIMEOUT,
            || async { (messages_read(&cluster).await >= 250.0).then_some(()) },
        )
        .await;
    // Replays are dropped by the sink's duplicate window: still each message once.
    assert_exactly_once(&cluster, &js, &expected).await;
    wait_committed_through(&cluster, *expected.last().unwrap()).await;
    assert_eq!(
        messages_read(&cluster).await,
        250.0,
        "read once each since the reset"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_stops_the_workers_and_resume_picks_up_where_they_stopped() {
    let cluster = Cluster::start().await;
    passthrough(&cluster).await;
    let js = cluster.nats.jetstream().await;
    let mut expected = publish_orders(&js, 0, 100).await;
    assert_exactly_once(&cluster, &js, &expected).await;

    cluster.kubectl_ok(&[
        "patch",
        "pipeline",
        PIPELINE,
        "-n",
        NS,
        "--type=merge",
        "-p",
        r#"{"spec":{"suspend":true}}"#,
    ]);
    cluster
        .wait_pipeline(NS, PIPELINE, "phase Suspended", |p| {
            p.status
                .as_ref()
                .and_then(|s| s.phase.as_ref())
                .is_some_and(|ph| format!("{ph:?}") == "Suspended")
        })
        .await;
    cluster
        .wait_for("no worker while suspended", TIMEOUT, || async {
            cluster.pods(NS, SELECTOR).await.is_empty().then_some(())
        })
        .await;
    let during = publish_orders(&js, 100, 100).await;
    assert_eq!(
        nats::count(&js, "orders-copy").await.unwrap(),
        100,
        "nothing moves while suspended"
    );
    expected.extend(during);

    cluster.kubectl_ok(&[
        "patch",
        "pipeline",
        PIPELINE,
        "-n",
        NS,
        "--type=merge",
        "-p",
        r#"{"spec":{"suspend":false}}"#,
    ]);
    cluster.wait_condition(NS, PIPELINE, "Ready", "True").await;
    assert_exactly_once(&cluster, &js, &expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_from_one_to_three_and_back_with_traffic_loses_and_repeats_nothing() {
    let cluster = Cluster::start().await;
    passthrough(&cluster).await;
    let js = cluster.nats.jetstream().await;
    let flow = Traffic::start(js.clone(), 5);
    for replicas in [3, 1] {
        cluster.kubectl_ok(&[
            "patch",
            "pipeline",
            PIPELINE,
            "-n",
            NS,
            "--type=merge",
            "-p",
            &format!(r#"{{"spec":{{"parallelism":{replicas}}}}}"#),
        ]);
        cluster
            .wait_for_ready_deployment(NS, "orders-copy-worker", replicas)
            .await;
        cluster
            .wait_pipeline(
                NS,
                PIPELINE,
                &format!("{replicas} ready workers owning the splits"),
                |p| {
                    p.status.as_ref().is_some_and(|s| {
                        s.ready_replicas == replicas as i32
                            && s.splits.iter().all(|s| s.owner.is_some())
                    })
                },
            )
            .await;
    }
    let expected = flow.stop().await;
    assert_exactly_once(&cluster, &js, &expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_run_is_restarted_and_loses_and_repeats_nothing() {
    let cluster = Cluster::start().await;
    passthrough(&cluster).await;
    let js = cluster.nats.jetstream().await;
    let flow = Traffic::start(js.clone(), 5);
    nats::wait_for_count(&js, "orders-copy", 100, TIMEOUT)
        .await
        .unwrap();
    let pods = cluster.pods(NS, SELECTOR).await;
    let (pod, pid) = pods.first().cloned().expect("a worker pod");
    Cluster::signal(pid.expect("the worker's pid"), "KILL");
    // The kubelet restarts the container in the same pod.
    cluster
        .wait_for("the killed worker to be restarted", TIMEOUT, || async {
            let now = cluster.pods(NS, SELECTOR).await;
            now.iter()
                .any(|(p, new_pid)| p == &pod && new_pid.is_some() && *new_pid != pid)
                .then_some(())
        })
        .await;
    cluster.wait_condition(NS, PIPELINE, "Ready", "True").await;
    let expected = flow.stop().await;
    assert_exactly_once(&cluster, &js, &expected).await;
}

async fn lease_holder(cluster: &Cluster) -> Option<String> {
    kube::Api::<Lease>::namespaced(cluster.client.clone(), OPERATOR_NAMESPACE)
        .get_opt("jetflow-operator")
        .await
        .ok()
        .flatten()?
        .spec?
        .holder_identity
}

/// Scales the passthrough pipeline and waits until the operator rolled it out: proof that an
/// operator leads and reconciles.
async fn scale_through_the_operator(cluster: &Cluster, replicas: u32) {
    cluster.kubectl_ok(&[
        "patch",
        "pipeline",
        PIPELINE,
        "-n",
        NS,
        "--type=merge",
        "-p",
        &format!(r#"{{"spec":{{"parallelism":{replicas}}}}}"#),
    ]);
    cluster
        .wait_for_ready_deployment(NS, "orders-copy-worker", replicas)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_killed_and_its_lease_taken_over_while_traffic_flows() {
    let cluster = Cluster::start_with(Options {
        operator_replicas: 2,
        ..Options::default()
    })
    .await;
    passthrough(&cluster).await;
    let js = cluster.nats.jetstream().await;
    let flow = Traffic::start(js.clone(), 5);
    let operators = "app.kubernetes.io/name=jetflow";
    let leader = cluster
        .wait_for("a Lease holder", TIMEOUT, || lease_holder(&cluster))
        .await;
    let pods = cluster.pods(OPERATOR_NAMESPACE, operators).await;
    assert_eq!(pods.len(), 2, "{pods:?}");
    let (_, pid) = pods
        .iter()
        .find(|(p, _)| *p == leader)
        .cloned()
        .expect("the leader's pod");

    // Killed: the kubelet restarts the container in the same pod, which leads again.
    Cluster::signal(pid.expect("the operator's pid"), "KILL");
    cluster
        .wait_for("the killed operator to be restarted", TIMEOUT, || async {
            let now = cluster.pods(OPERATOR_NAMESPACE, operators).await;
            now.iter()
                .any(|(p, new_pid)| *p == leader && new_pid.is_some() && *new_pid != pid)
                .then_some(())
        })
        .await;
    scale_through_the_operator(&cluster, 2).await;

    // The leader's pod deleted: another replica (the standby, or the pod that replaces the
    // deleted one, whichever asks first) takes the Lease and reconciles.
    cluster.kubectl_ok(&[
        "delete",
        "pod",
        &leader,
        "-n",
        OPERATOR_NAMESPACE,
        "--wait=false",
    ]);
    let new_leader = cluster
        .wait_for("the standby to take the Lease", TIMEOUT, || async {
            lease_holder(&cluster).await.filter(|h| *h != leader)
        })
        .await;
    assert_ne!(new_leader, leader);
    scale_through_the_operator(&cluster, 1).await;

    let expected = flow.stop().await;
    assert_exactly_once(&cluster, &js, &expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_deleted_for_good_leaves_no_consumer_and_no_owned_object() {
    let cluster = Cluster::start().await;
    passthrough(&cluster).await;
    let js = cluster.nats.jetstream().await;
    let expected = publish_orders(&js, 0, 100).await;
    assert_exactly_once(&cluster, &js, &expected).await;
    wait_committed_through(&cluster, *expected.last().unwrap()).await;

    cluster.kubectl_ok(&["delete", "pipeline", PIPELINE, "-n", NS, "--wait=true"]);
    let labels = ListParams::default().labels(SELECTOR);
    let client = &cluster.client;
    cluster
        .wait_for("every owned object to go", TIMEOUT, || async {
            let deployments = kube::Api::<Deployment>::namespaced(client.clone(), NS)
                .list(&labels)
                .await
                .ok()?
                .items
                .len();
            let accounts = kube::Api::<ServiceAccount>::namespaced(client.clone(), NS)
                .list(&labels)
                .await
                .ok()?
                .items
                .len();
            let roles = kube::Api::<Role>::namespaced(client.clone(), NS)
                .list(&labels)
                .await
                .ok()?
                .items
                .len();
            let bindings = kube::Api::<RoleBinding>::namespaced(client.clone(), NS)
                .list(&labels)
                .await
                .ok()?
                .items
                .len();
            let pods = cluster.pods(NS, SELECTOR).await.len();
            (deployments + accounts + roles + bindings + pods == 0).then_some(())
        })
        .await;
    // The checkpoint ConfigMap stays, as documented; nothing else of the pipeline does.
    let maps: Vec<String> = kube::Api::<ConfigMap>::namespaced(client.clone(), NS)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .filter(|n| n.starts_with(PIPELINE))
        .collect();
    assert_eq!(maps, vec![format!("{PIPELINE}-checkpoint")]);
    // No consumer is left on the source stream, also a while after the delete (a worker still
    // running would have recreated its consumer).
    let mut stream = js.get_stream("orders").await.unwrap();
    let consumers = stream.info().await.unwrap().state.consumer_count;
    assert_eq!(consumers, 0, "consumers left on the source stream");
}

#[test]
fn an_invalid_manifest_is_refused_at_kubectl_apply_with_the_crds_message() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let cluster = runtime.block_on(Cluster::start());
    cluster.ensure_namespace(NS);
    let dir = jetflow_e2e_cluster::root().join("crds/tests/invalid");
    let mut checked = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let header = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("# {key}: ")))
                .map(str::to_owned)
                .unwrap_or_else(|| panic!("{}: no `# {key}:` line", path.display()))
        };
        let (field, cel) = (header("field"), header("cel"));
        let file = path.display().to_string();
        let output = cluster.kubectl(&["apply", "--server-side", "-n", NS, "-f", &file]);
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        if output.status.success() {
            // Only a rule the CRD's schema cannot express gets past admission; the operator's
            // validation then refuses it in the SpecValid condition, naming the field.
            assert_eq!(cel, "none", "{} was accepted", file_name(&path));
            let message = runtime.block_on(cluster.wait_for(
                &format!("{} refused in SpecValid", file_name(&path)),
                TIMEOUT,
                || async {
                    let o = cluster.kubectl(&[
                        "get",
                        "-n",
                        NS,
                        "-f",
                        &file,
                        "-o",
                        r#"jsonpath={.status.conditions[?(@.type=="SpecValid")]}"#,
                    ]);
                    let text = String::from_utf8_lossy(&o.stdout).into_owned();
                    text.contains(r#""status":"False""#).then_some(text)
                },
            ));
            assert!(message.contains(&field), "{}: {message}", file_name(&path));
            checked.insert(file_name(&path), message);
            continue;
        }
        assert!(
            stderr.contains("is invalid"),
            "{}: {stderr}",
            file_name(&path)
        );
        if cel != "none" {
            assert!(
                stderr.contains(&cel),
                "{}: the rule's message {cel:?} in {stderr}",
                file_name(&path)
            );
        }
        // The field, or the object the rule is declared on (a CEL rule on `spec` that checks
        // `spec.deletionPolicy` names `spec`).
        let mut parts: Vec<&str> = field.split('.').collect();
        let mut named = false;
        while !parts.is_empty() {
            named |= stderr.contains(&format!("{}: ", parts.join(".")));
            parts.pop();
        }
        assert!(named, "{}: the field {field} in {stderr}", file_name(&path));
        checked.insert(file_name(&path), stderr);
    }
    assert!(checked.len() >= 10, "{checked:?}");
    drop(cluster);
}

fn file_name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}
