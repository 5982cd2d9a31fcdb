//! Every example of `examples/` as a user runs it in a cluster: `kubectl apply --server-side`
//! of the example into a namespace, the real operator (installed from the chart) creating the
//! streams and the worker Deployment, worker pods run by the local kubelet, input published
//! into NATS, the output checked message by message and the documented state read from the
//! Pipeline's status.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use jetflow_e2e_cluster::nats::{self, Collector, publish_js, source_sequences};
use jetflow_e2e_cluster::{Cluster, Options, TIMEOUT};

const NS: &str = "shop";

/// Examples this file runs; `every_example_runs_on_the_local_control_plane` keeps it honest.
const COVERED: &[&str] = &[
    "passthrough",
    "core-capture",
    "fanout-core",
    "backfill-bounded",
    "parallel-six-splits",
    "credentials-secret",
    "enrich-jq",
    "route-by-field",
    "dead-letter",
    "autoscale-lag",
];

#[test]
fn every_example_runs_on_the_local_control_plane() {
    let missing = jetflow_e2e::output::examples_not_covered(&jetflow_e2e_cluster::root(), COVERED);
    assert!(
        missing.is_empty(),
        "examples without a test in e2e/cluster/tests/examples.rs: {missing:?}"
    );
}

/// Applies the example and waits until its Pipeline is Ready.
async fn apply_ready(cluster: &Cluster, example: &str, pipeline: &str) {
    cluster.apply(NS, &Cluster::example(example));
    cluster.wait_condition(NS, pipeline, "Ready", "True").await;
}

/// Waits until the Pipeline's last checkpoint holds `position` for every split in `positions`.
async fn wait_committed(cluster: &Cluster, pipeline: &str, positions: &BTreeMap<String, u64>) {
    cluster
        .wait_pipeline(NS, pipeline, &format!("positions {positions:?}"), |p| {
            let Some(status) = &p.status else {
                return false;
            };
            positions.iter().all(|(split, position)| {
                status
                    .splits
                    .iter()
                    .any(|s| &s.name == split && s.position == *position)
            }) && status.last_checkpoint.is_some()
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_runs_under_the_operator_and_copies_each_message_once() {
    let cluster = Cluster::start().await;
    apply_ready(&cluster, "passthrough", "orders-copy").await;
    let js = cluster.nats.jetstream().await;
    let mut expected = BTreeMap::new();
    for i in 0..500u32 {
        let region = ["eu", "us", "asia"][i as usize % 3];
        let subject = format!("orders.{region}.shop{}", i % 5);
        let seq = publish_js(&js, &subject, format!(r#"{{"order":{i}}}"#)).await;
        if region != "asia" {
            expected.insert(seq, subject);
        }
    }
    nats::wait_for_count(&js, "orders-copy", expected.len() as u64, TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.diagnostics()));
    let copied = nats::messages(&js, "orders-copy").await.unwrap();
    assert_eq!(
        source_sequences(&copied),
        expected.keys().copied().collect::<Vec<_>>(),
        "every filtered message exactly once"
    );
    for m in &copied {
        let seq: u64 = m.source().sequence;
        assert_eq!(m.subject, format!("copy.{}", expected[&seq]));
    }
    // The status reports each split's committed position and no lag once it caught up.
    let last = |prefix: &str| {
        expected
            .iter()
            .filter(|(_, s)| s.starts_with(prefix))
            .map(|(seq, _)| *seq)
            .max()
            .unwrap()
    };
    let positions = BTreeMap::from([
        ("orders.eu.>".to_owned(), last("orders.eu.")),
        ("orders.us.>".to_owned(), last("orders.us.")),
    ]);
    wait_committed(&cluster, "orders-copy", &positions).await;
    let pipeline = cluster
        .wait_pipeline(NS, "orders-copy", "lag 0", |p| {
            p.status.as_ref().and_then(|s| s.lag) == Some(0)
        })
        .await;
    let status = pipeline.status.unwrap();
    assert_eq!(status.ready_replicas, 1);
    assert!(status.splits.iter().all(|s| s.owner.is_some()));
    // kubectl shows the printer columns.
    let table = cluster.kubectl_ok(&["get", "pipelines", "-n", NS]);
    assert!(
        table.contains("PHASE") && table.contains("LAG") && table.contains("orders-copy"),
        "{table}"
    );
    assert!(table.contains("Running"), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_bounded_succeeds_and_copies_what_the_stream_held() {
    let cluster = Cluster::start().await;
    // The clicks are stored before the Pipeline exists: the stream is created first (the
    // operator adopts it), then the example applied; the run copies them all and finishes.
    let manifest = Cluster::example("backfill-bounded");
    jetflow_e2e::streams::apply_manifest(
        &manifest,
        &cluster.nats.url(),
        &jetflow_nats::Secrets::new(cluster.dir().join("no-secrets")),
    )
    .await
    .expect("the example's streams");
    let js = cluster.nats.jetstream().await;
    let mut stored = Vec::new();
    for i in 0..300u32 {
        let page = ["home", "cart", "checkout"][i as usize % 3];
        stored.push(
            publish_js(
                &js,
                &format!("clicks.web.{page}"),
                format!(r#"{{"click":{i}}}"#),
            )
            .await,
        );
    }
    cluster.apply(NS, &manifest);
    let pipeline = cluster
        .wait_pipeline(NS, "clicks-backfill", "phase Succeeded", |p| {
            p.status
                .as_ref()
                .and_then(|s| s.phase.as_ref())
                .is_some_and(|ph| format!("{ph:?}") == "Succeeded")
        })
        .await;
    let status = pipeline.status.unwrap();
    assert!(
        status.splits.iter().all(|s| s.finished),
        "{:?}",
        status.splits
    );
    let copied = nats::messages(&js, "clicks-backfill").await.unwrap();
    assert_eq!(
        source_sequences(&copied),
        stored,
        "every stored click exactly once"
    );
    // A finished run scales its workers to zero.
    cluster
        .wait_for("the backfill's workers to go", TIMEOUT, || async {
            cluster
                .pods(NS, "jetflow.io/pipeline=clicks-backfill")
                .await
                .is_empty()
                .then_some(())
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_six_splits_spread_over_three_pods_in_order() {
    let cluster = Cluster::start().await;
    apply_ready(&cluster, "parallel-six-splits", "transfers-ledger").await;
    let js = cluster.nats.jetstream().await;
    let regions = ["eu", "us", "apac", "latam", "mea", "anz"];
    let mut by_region: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for i in 0..600u32 {
        let region = regions[i as usize % 6];
        let seq = publish_js(
            &js,
            &format!("transfers.{region}.t{i}"),
            format!(r#"{{"transfer":{i}}}"#),
        )
        .await;
        by_region.entry(region).or_default().push(seq);
    }
    nats::wait_for_count(&js, "transfers-ledger", 600, TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.diagnostics()));
    let ledger = nats::messages(&js, "transfers-ledger").await.unwrap();
    assert_eq!(ledger.len(), 600);
    for (region, sequences) in &by_region {
        let written: Vec<u64> = ledger
            .iter()
            .filter(|m| {
                m.subject
                    .starts_with(&format!("ledger.transfers.{region}."))
            })
            .map(|m| m.source().sequence)
            .collect();
        assert_eq!(
            &written, sequences,
            "split transfers.{region}.> in order, once"
        );
    }
    let pipeline = cluster.pipeline(NS, "transfers-ledger").await.unwrap();
    let owners: BTreeSet<String> = pipeline
        .status
        .unwrap()
        .splits
        .iter()
        .filter_map(|s| s.owner.clone())
        .collect();
    assert_eq!(owners.len(), 3, "six splits over three pods: {owners:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrich_jq_writes_the_summaries_and_keeps_bad_orders_in_a_dead_letter_stream() {
    let cluster = Cluster::start().await;
    apply_ready(&cluster, "enrich-jq", "orders-enrich").await;
    let client = cluster.nats.client().await;
    let dlq = Collector::start(&client, "jetflow.dlq.orders-enrich")
        .await
        .unwrap();
    let js = cluster.nats.jetstream().await;
    let mut paid = BTreeMap::new();
    for i in 0..60u32 {
        let status = if i % 3 == 0 { "pending" } else { "paid" };
        let body = format!(
            r#"{{"order_id":"o-{i}","qty":{},"price":2.5,"status":"{status}","customer":{{"name":"c{i}"}}}}"#,
            i % 4 + 1
        );
        let seq = publish_js(&js, "orders.eu.created", body).await;
        if status == "paid" {
            paid.insert(format!("o-{i}"), (seq, f64::from(i % 4 + 1) * 2.5));
        }
    }
    publish_js(&js, "orders.eu.created", "not json".to_owned()).await;
    nats::wait_for_count(&js, "orders-summary", paid.len() as u64, TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.diagnostics()));
    dlq.wait_until("the bad order's dead letter", TIMEOUT, |got| {
        !got.is_empty()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", cluster.diagnostics()));
    // The example declares no stream for its dead letters (the default subject
    // jetflow.dlq.orders-enrich): the operator made one, owned by the Pipeline, and the dead
    // letter is kept in it, not only seen by whoever listened at the time.
    nats::wait_for_count(&js, "orders-enrich-dlq", 1, TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.diagnostics()));
    let kept = nats::messages(&js, "orders-enrich-dlq").await.unwrap();
    assert_eq!(kept.len(), 1, "one dead letter: {kept:?}");
    assert_eq!(kept[0].subject, "jetflow.dlq.orders-enrich");
    assert_eq!(kept[0].text(), "not json");
    let owner = cluster.kubectl_ok(&[
        "get",
        "stream",
        "orders-enrich-dlq",
        "-n",
        NS,
        "-o",
        "jsonpath={.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}",
    ]);
    assert_eq!(owner.trim(), "Pipeline/orders-enrich");
    let summaries = nats::messages(&js, "orders-summary").await.unwrap();
    assert_eq!(summaries.len(), paid.len(), "each paid order once");
    for m in &summaries {
        let json = m.json().expect("a JSON summary");
        let id = json["id"].as_str().unwrap();
        let (seq, total) = paid[id];
        assert_eq!(json["total"].as_f64(), Some(total));
        assert_eq!(json["seq"].as_u64(), Some(seq));
        assert_eq!(json["region"], "eu");
        assert_eq!(m.subject, "summary.orders.eu.created");
        assert_eq!(m.header("Jetflow-Region").as_deref(), Some("eu"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_by_field_routes_each_event_to_its_tenant() {
    let cluster = Cluster::start().await;
    apply_ready(&cluster, "route-by-field", "events-by-tenant").await;
    let js = cluster.nats.jetstream().await;
    let mut expected = BTreeMap::new();
    for i in 0..90u32 {
        let tenant = ["acme", "globex", "initech"][i as usize % 3];
        let service = ["billing", "search"][i as usize % 2];
        let seq = publish_js(
            &js,
            &format!("events.{service}"),
            format!(r#"{{"tenant":"{tenant}","n":{i}}}"#),
        )
        .await;
        expected.insert(seq, format!("tenants.{tenant}.{service}"));
    }
    // No tenant: set aside on the dead-letter stream, never lost.
    let bad = publish_js(&js, "events.billing", r#"{"n":"no tenant"}"#.to_owned()).await;
    nats::wait_for_count(&js, "tenant-events", expected.len() as u64, TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.diagnostics()));
    nats::wait_for_count(&js, "events-dlq", 1, TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.diagnostics()));
    let routed = nats::messages(&js, "tenant-events").await.unwrap();
    assert_eq!(
        source_sequences(&routed),
        expected.keys().copied().collect::<Vec<_>>()
    );
    for m in &routed {
        let seq: u64 = m.source().sequence;
        assert_eq!(m.subject, expected[&seq]);
    }
    let dead = nats::messages(&js, "events-dlq").await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].source().sequence, bad);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_converts_amounts_and_sets_bad_payments_aside() {
    let cluster = Cluster::start().await;
    apply_ready(&cluster, "dead-letter", "payments-cents").await;
    let js = cluster.nats.jetstream().await;
    let mut good = BTreeMap::new();
    let mut bad = BTreeSet::new();
    for i in 0..50u32 {
        if i % 10 == 7 {
            bad.insert(
                publish_js(
                    &js,
                    "payments.card",
                    format!(r#"{{"id":"p{i}","amount":"lots"}}"#),
                )
                .await,
            );
        } else {
            let seq = publish_js(
                &js,
                "payments.card",
                format!(r#"{{"id":"p{i}","amount":{i}.25}}"#),
            )
            .await;
            good.insert(format!("p{i}"), (seq, i64::from(i) * 100 + 25));
        }
    }
    nats::wait_for_count(&js, "payments-cents", good.len() as u64, TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.diagnostics()));
    nats::wait_for_count(&js, "payments-dlq", bad.len() as u64, TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.diagnostics()));
    for m in nats::messages(&js, "payments-cents").await.unwrap() {
        let json = m.json().unwrap();
        let (_, cents) = good[json["id"].as_str().unwrap()];
        assert_eq!(json["cents"].as_i64(), Some(cents));
    }
    let dead: BTreeSet<u64> = nats::messages(&js, "payments-dlq")
        .await
        .unwrap()
        .iter()
        .map(|m| m.source().sequence)
        .collect();
    assert_eq!(dead, bad, "each bad payment set aside once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_capture_stores_readings_published_while_the_workers_listen() {
    let cluster = Cluster::start().await;
    apply_ready(&cluster, "core-capture", "sensor-capture").await;
    let client = cluster.nats.client().await;
    let js = cluster.nats.jetstream().await;
    // Core keeps nothing: probe until both subjects are captured by the listening workers.
    for subject in ["sensors.temperature.probe", "sensors.humidity.probe"] {
        let prefix = format!("archive.{}", subject.trim_end_matches(".probe"));
        cluster
            .wait_for(&format!("{subject} captured"), TIMEOUT, || async {
                client.publish(subject.to_owned(), "{}".into()).await.ok()?;
                client.flush().await.ok()?;
                tokio::time::sleep(Duration::from_millis(100)).await;
                let stored = nats::messages(&js, "sensor-readings").await.ok()?;
                stored
                    .iter()
                    .any(|m| m.subject.starts_with(&prefix))
                    .then_some(())
            })
            .await;
    }
    let before = nats::count(&js, "sensor-readings").await.unwrap();
    let mut sent = BTreeSet::new();
    for i in 0..200u32 {
        let subject = ["sensors.temperature.berlin", "sensors.humidity.paris"][i as usize % 2];
        let payload = format!(r#"{{"reading":{i}}}"#);
        sent.insert(payload.clone());
        client
            .publish(subject.to_owned(), payload.into())
            .await
            .unwrap();
    }
    client.flush().await.unwrap();
    nats::wait_for_count(&js, "sensor-readings", before + sent.len() as u64, TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.diagnostics()));
    let stored = nats::messages(&js, "sensor-readings").await.unwrap();
    let readings: Vec<String> = stored
        .iter()
        .map(|m| m.text())
        .filter(|t| t.contains("reading"))
        .collect();
    assert_eq!(
        readings.len(),
        sent.len(),
        "two queue-group workers store each reading once"
    );
    assert_eq!(readings.into_iter().collect::<BTreeSet<_>>(), sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_core_republishes_each_alert_on_its_notify_subject() {
    let cluster = Cluster::start().await;
    apply_ready(&cluster, "fanout-core", "alerts-fanout").await;
    let client = cluster.nats.client().await;
    let heard = Collector::start(&client, "notify.>").await.unwrap();
    let js = cluster.nats.jetstream().await;
    let mut sent = BTreeMap::new();
    for i in 0..100u32 {
        let (team, severity) = [("payments", "critical"), ("search", "warning")][i as usize % 2];
        let payload = format!(r#"{{"alert":{i}}}"#);
        publish_js(&js, &format!("alerts.{team}.{severity}"), payload.clone()).await;
        sent.insert(payload, format!("notify.{team}.{severity}"));
    }
    let received = heard
        .wait_until("every alert on its notify subject", TIMEOUT, |got| {
            let texts: BTreeSet<String> = got.iter().map(|m| m.text()).collect();
            sent.keys().all(|k| texts.contains(k))
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.diagnostics()));
    for m in received.iter().filter(|m| m.text().contains("alert")) {
        assert_eq!(m.subject, sent[&m.text()]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_secret_reaches_nats_through_the_mounted_secret() {
    let cluster = Cluster::start_with(Options {
        nats_conf: "authorization {\n  users = [ { user: invoices, password: change-me } ]\n}\n"
            .to_owned(),
        ..Options::default()
    })
    .await;
    apply_ready(&cluster, "credentials-secret", "invoices-archive").await;
    let client =
        async_nats::ConnectOptions::with_user_and_password("invoices".into(), "change-me".into())
            .connect(cluster.nats.url())
            .await
            .unwrap();
    let js = async_nats::jetstream::new(client);
    let mut expected = Vec::new();
    for i in 0..100u32 {
        expected.push(
            publish_js(
                &js,
                &format!("invoices.acme.{}", 2026 + i % 2),
                format!(r#"{{"invoice":{i}}}"#),
            )
            .await,
        );
    }
    nats::wait_for_count(&js, "invoices-archive", 100, TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.diagnostics()));
    let archived = nats::messages(&js, "invoices-archive").await.unwrap();
    assert_eq!(source_sequences(&archived), expected);
}

/// The messages of the Events about `pipeline` with `reason`.
async fn events(cluster: &Cluster, pipeline: &str, reason: &str) -> Vec<String> {
    use k8s_openapi::api::core::v1::Event;
    kube::Api::<Event>::namespaced(cluster.client.clone(), NS)
        .list(&Default::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| {
            e.involved_object.name.as_deref() == Some(pipeline)
                && e.reason.as_deref() == Some(reason)
        })
        .filter_map(|e| e.message)
        .collect()
}

fn patch_pipeline(cluster: &Cluster, pipeline: &str, patch: &str) {
    cluster.kubectl_ok(&[
        "patch",
        "pipeline",
        pipeline,
        "-n",
        NS,
        "--type=merge",
        "-p",
        patch,
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autoscale_lag_adds_workers_for_a_backlog_and_removes_them_once_it_drained() {
    const PIPELINE: &str = "orders-archive";
    let cluster = Cluster::start().await;
    apply_ready(&cluster, "autoscale-lag", PIPELINE).await;
    cluster
        .wait_pipeline(NS, PIPELINE, "the autoscaler holding one worker", |p| {
            p.status.as_ref().is_some_and(|s| {
                s.autoscaling
                    .as_ref()
                    .is_some_and(|a| a.desired_parallelism == 1)
                    && s.ready_replicas == 1
            })
        })
        .await;

    // A backlog builds up while the workers are stopped, and orders keep coming.
    patch_pipeline(&cluster, PIPELINE, r#"{"spec":{"suspend":true}}"#);
    cluster
        .wait_pipeline(NS, PIPELINE, "no worker left", |p| {
            p.status.as_ref().is_some_and(|s| s.replicas == 0)
        })
        .await;
    let js = cluster.nats.jetstream().await;
    let regions = ["eu", "us", "apac", "latam"];
    let mut expected = Vec::new();
    for i in 0..6000u32 {
        let region = regions[i as usize % 4];
        let subject = format!("orders.{region}.shop{}", i % 7);
        expected.push(publish_js(&js, &subject, format!(r#"{{"order":{i}}}"#)).await);
    }
    let flow = nats::Traffic::start(js.clone(), 2);

    // Resumed, the pipeline sees 6000 messages of lag: 6 workers wanted at 1000 per worker,
    // capped at the 4 splits (maxParallelism is 8), one split each.
    patch_pipeline(&cluster, PIPELINE, r#"{"spec":{"suspend":false}}"#);
    cluster
        .wait_for_ready_deployment(NS, "orders-archive-worker", 4)
        .await;
    let scaled = cluster
        .wait_pipeline(NS, PIPELINE, "4 workers, one split each", |p| {
            p.status.as_ref().is_some_and(|s| {
                let owners: BTreeSet<_> = s.splits.iter().filter_map(|s| s.owner.clone()).collect();
                s.autoscaling
                    .as_ref()
                    .is_some_and(|a| a.desired_parallelism == 4)
                    && s.ready_replicas == 4
                    && s.splits.len() == 4
                    && owners.len() == 4
            })
        })
        .await;
    let decided = scaled.status.unwrap().autoscaling.unwrap();
    assert!(decided.last_scale_time.is_some(), "{decided:?}");
    let up = events(&cluster, PIPELINE, "ScaledUp").await;
    assert!(
        up.iter()
            .any(|m| m.starts_with("workers 1 → 4") && m.contains("lag ")),
        "a ScaledUp event with the lag: {up:?}"
    );
    let workers = cluster.pods(NS, "jetflow.io/pipeline=orders-archive").await;
    assert_eq!(workers.len(), 4, "{workers:?}");

    // The backlog drains; the lag asks for one worker, but the four stay for the
    // stabilization window (five minutes in the example).
    let drained = cluster
        .wait_pipeline(NS, PIPELINE, "the lag asking for one worker", |p| {
            p.status
                .as_ref()
                .and_then(|s| s.autoscaling.as_ref())
                .is_some_and(|a| a.recommended_parallelism == 1 && a.below_since.is_some())
        })
        .await;
    let status = drained.status.unwrap();
    assert_eq!(status.autoscaling.as_ref().unwrap().desired_parallelism, 4);
    assert!(events(&cluster, PIPELINE, "ScaledDown").await.is_empty());

    // A short window: the workers go down to one, which takes over every split.
    patch_pipeline(
        &cluster,
        PIPELINE,
        r#"{"spec":{"autoscaling":{"scaleDownStabilizationSeconds":2}}}"#,
    );
    cluster
        .wait_for_ready_deployment(NS, "orders-archive-worker", 1)
        .await;
    cluster
        .wait_pipeline(NS, PIPELINE, "1 worker owning the 4 splits", |p| {
            p.status.as_ref().is_some_and(|s| {
                let owners: BTreeSet<_> = s.splits.iter().filter_map(|s| s.owner.clone()).collect();
                s.autoscaling
                    .as_ref()
                    .is_some_and(|a| a.desired_parallelism == 1)
                    && s.replicas == 1
                    && owners.len() == 1
                    && s.splits.iter().all(|s| s.owner.is_some())
            })
        })
        .await;
    // The worker that stays is one of the four, the same process: no pod restarted.
    let left = cluster.pods(NS, "jetflow.io/pipeline=orders-archive").await;
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(workers.contains(&left[0]), "{left:?} among {workers:?}");
    let down = events(&cluster, PIPELINE, "ScaledDown").await;
    assert!(
        down.iter().any(|m| m.starts_with("workers 4 → 1")),
        "a ScaledDown event: {down:?}"
    );

    // The autoscaler owns the workers: a `kubectl scale` only changes where they would start.
    cluster.kubectl_ok(&["scale", "pipeline", PIPELINE, "-n", NS, "--replicas", "3"]);
    let p = cluster
        .wait_pipeline(NS, PIPELINE, "the scale observed", |p| {
            p.spec.parallelism == 3
                && p.status.as_ref().and_then(|s| s.observed_generation) == p.metadata.generation
        })
        .await;
    assert_eq!(
        p.status.unwrap().autoscaling.unwrap().desired_parallelism,
        1
    );
    let deployment =
        kube::Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(cluster.client.clone(), NS)
            .get("orders-archive-worker")
            .await
            .unwrap();
    assert_eq!(deployment.spec.unwrap().replicas, Some(1));

    // Every order, of the backlog and of the traffic during both scales, once.
    expected.extend(flow.stop().await);
    cluster
        .assert_exactly_once(&js, "orders-archive", &expected)
        .await;
}
