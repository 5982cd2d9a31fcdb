//! Every example of `examples/` end to end, without a cluster: a real nats-server
//! (jetflow-testsupport), the example's streams created from its `Stream` manifests, input
//! suited to the example published, the real `jetflow-worker` binary running the example's
//! Pipeline as a separate process, and the output checked message by message.
//!
//! The worker binary is the one cargo built beside these tests (`cargo build -p
//! jetflow-worker`, which `scripts/test.sh` runs first) or `$JETFLOW_WORKER_BIN`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{Example, TIMEOUT, publish_js, source_sequences};
use jetflow_e2e::output::{self, Collector};

/// Examples this file runs end to end; `every_example_has_an_end_to_end_test` keeps the list
/// honest when an example is added.
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
fn every_example_has_an_end_to_end_test() {
    let missing =
        jetflow_e2e::output::examples_not_covered(&jetflow_testsupport::workspace_root(), COVERED);
    assert!(
        missing.is_empty(),
        "examples without an end-to-end test in e2e/local/tests: {missing:?}"
    );
}

/// Publishes the passthrough example's input: 1000 orders over the two filtered regions and a
/// few outside the filters. Returns source sequence -> subject of the filtered ones.
async fn publish_orders(js: &async_nats::jetstream::Context) -> BTreeMap<u64, String> {
    let mut expected = BTreeMap::new();
    for i in 0..1000u32 {
        let region = if i % 2 == 0 { "eu" } else { "us" };
        let subject = format!("orders.{region}.shop{}", i % 7);
        let seq = publish_js(js, &subject, format!(r#"{{"order":{i}}}"#)).await;
        expected.insert(seq, subject);
        // Outside the filters: stored in `orders`, never copied.
        if i % 100 == 0 {
            publish_js(js, "orders.asia.shop1", "{}".to_owned()).await;
        }
    }
    expected
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_copies_each_filtered_message_once_with_its_source_headers() {
    let ex = Example::start("passthrough").await;
    let js = ex.jetstream().await;
    let expected = publish_orders(&js).await;

    let mut worker = ex.worker().spawn(&ex.log("worker")).unwrap();
    output::wait_for_count(&js, "orders-copy", 1000, TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", worker.log()));
    let status = worker.stop(TIMEOUT).await.unwrap();
    assert!(status.success(), "worker exit {status}\n{}", worker.log());

    let copied = output::messages(&js, "orders-copy").await.unwrap();
    assert_eq!(
        copied.len(),
        1000,
        "orders-copy holds exactly the filtered messages"
    );
    for m in &copied {
        let seq: u64 = m.source().sequence;
        let subject = &expected[&seq];
        assert_eq!(m.subject, format!("copy.{subject}"));
        assert_eq!(
            m.header("Jetflow-Source"),
            Some(format!("orders/{seq}/{subject}"))
        );
        assert!(
            m.header("Nats-Msg-Id").is_some(),
            "every output carries a message id"
        );
    }
    assert_eq!(
        source_sequences(&copied),
        expected.keys().copied().collect::<Vec<_>>(),
        "every filtered source message exactly once"
    );

    // The final checkpoint holds, per split, the last sequence of its subjects.
    let checkpoint = ex.checkpoint("orders-copy");
    let last = |prefix: &str| {
        expected
            .iter()
            .filter(|(_, s)| s.starts_with(prefix))
            .map(|(seq, _)| *seq)
            .max()
            .unwrap()
    };
    assert_eq!(
        checkpoint.splits["orders.eu.>"].position,
        last("orders.eu.")
    );
    assert_eq!(
        checkpoint.splits["orders.us.>"].position,
        last("orders.us.")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_restarted_after_sigterm_resumes_without_duplicates() {
    let ex = Example::start("passthrough").await;
    let js = ex.jetstream().await;
    let mut expected = publish_orders(&js).await;
    let mut worker = ex.worker().spawn(&ex.log("worker-1")).unwrap();
    output::wait_for_count(&js, "orders-copy", 1000, TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", worker.log()));
    let status = worker.stop(TIMEOUT).await.unwrap();
    assert!(status.success(), "worker exit {status}\n{}", worker.log());

    // A restart resumes after the checkpoint: new messages once, the old ones not again.
    for i in 0..100u32 {
        let subject = format!("orders.eu.shop{}", i % 3);
        let seq = publish_js(&js, &subject, format!(r#"{{"order":{}}}"#, 1000 + i)).await;
        expected.insert(seq, subject);
    }
    let mut worker = ex.worker().spawn(&ex.log("worker-2")).unwrap();
    output::wait_for_count(&js, "orders-copy", 1100, TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", worker.log()));
    let status = worker.stop(TIMEOUT).await.unwrap();
    assert!(status.success(), "worker exit {status}\n{}", worker.log());
    let copied = output::messages(&js, "orders-copy").await.unwrap();
    assert_eq!(
        source_sequences(&copied),
        expected.keys().copied().collect::<Vec<_>>(),
        "after a restart, still every message exactly once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_capture_stores_every_reading_published_while_the_worker_listens() {
    let ex = Example::start("core-capture").await;
    let js = ex.jetstream().await;
    let client = ex.client().await;
    let mut worker = ex.worker().spawn(&ex.log("worker")).unwrap();

    // NATS Core keeps nothing: readings published before the worker subscribed are lost (at
    // most once). Publish probes until one is captured, then the readings under test.
    let started = std::time::Instant::now();
    loop {
        output::publish(&client, "sensors.temperature.probe", "{}".into())
            .await
            .unwrap();
        client.flush().await.unwrap();
        if output::count(&js, "sensor-readings").await.unwrap() > 0 {
            break;
        }
        assert!(
            started.elapsed() < TIMEOUT,
            "nothing captured\n{}",
            worker.log()
        );
        assert!(worker.running(), "worker exited\n{}", worker.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Both subjects must be live before the counted readings (each subject is a split).
    let started = std::time::Instant::now();
    loop {
        output::publish(&client, "sensors.humidity.probe", "{}".into())
            .await
            .unwrap();
        client.flush().await.unwrap();
        let stored = output::messages(&js, "sensor-readings").await.unwrap();
        if stored
            .iter()
            .any(|m| m.subject.starts_with("archive.sensors.humidity."))
        {
            break;
        }
        assert!(
            started.elapsed() < TIMEOUT,
            "humidity never captured\n{}",
            worker.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let before = output::count(&js, "sensor-readings").await.unwrap();
    let mut sent = BTreeSet::new();
    for i in 0..300u32 {
        let (subject, payload) = match i % 3 {
            0 => (
                "sensors.temperature.berlin",
                format!(r#"{{"reading":{i},"celsius":21.5}}"#),
            ),
            1 => (
                "sensors.humidity.paris",
                format!(r#"{{"reading":{i},"percent":40}}"#),
            ),
            // Not a captured subject.
            _ => (
                "sensors.pressure.rome",
                format!(r#"{{"reading":{i},"hpa":1013}}"#),
            ),
        };
        if !subject.starts_with("sensors.pressure.") {
            sent.insert(payload.clone());
        }
        output::publish(&client, subject, payload.into())
            .await
            .unwrap();
    }
    client.flush().await.unwrap();
    output::wait_for_count(&js, "sensor-readings", before + sent.len() as u64, TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", worker.log()));
    let status = worker.stop(TIMEOUT).await.unwrap();
    assert!(status.success(), "worker exit {status}\n{}", worker.log());

    let stored = output::messages(&js, "sensor-readings").await.unwrap();
    let readings: Vec<_> = stored
        .iter()
        .filter(|m| m.text().contains("reading"))
        .collect();
    let payloads: BTreeSet<String> = readings.iter().map(|m| m.text()).collect();
    assert_eq!(
        payloads, sent,
        "each reading published while listening, once"
    );
    assert_eq!(readings.len(), sent.len(), "no reading stored twice");
    for m in &stored {
        assert!(
            m.subject.starts_with("archive.sensors.temperature.")
                || m.subject.starts_with("archive.sensors.humidity."),
            "unexpected subject {}",
            m.subject
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_core_republishes_each_alert_on_its_notify_subject() {
    let ex = Example::start("fanout-core").await;
    let js = ex.jetstream().await;
    let client = ex.client().await;
    let heard = Collector::start(&client, "notify.>").await.unwrap();
    let mut worker = ex.worker().spawn(&ex.log("worker")).unwrap();

    // `start: New`: alerts stored before the split started are skipped; probe until one
    // comes through, so the counted alerts below are all after the start.
    let started = std::time::Instant::now();
    while heard.received().is_empty() {
        publish_js(&js, "alerts.probe.info", r#"{"probe":true}"#.to_owned()).await;
        assert!(
            started.elapsed() < TIMEOUT,
            "no alert fanned out\n{}",
            worker.log()
        );
        assert!(worker.running(), "worker exited\n{}", worker.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let mut sent = BTreeMap::new();
    for i in 0..200u32 {
        let (team, severity) = [("payments", "critical"), ("search", "warning")][i as usize % 2];
        let payload = format!(r#"{{"alert":{i},"team":"{team}"}}"#);
        publish_js(&js, &format!("alerts.{team}.{severity}"), payload.clone()).await;
        sent.insert(payload, format!("notify.{team}.{severity}"));
    }
    let received = heard
        .wait_until("every alert on its notify subject", TIMEOUT, |got| {
            let texts: BTreeSet<String> = got.iter().map(|m| m.text()).collect();
            sent.keys().all(|k| texts.contains(k))
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", worker.log()));
    for m in received.iter().filter(|m| m.text().contains("alert")) {
        assert_eq!(m.subject, sent[&m.text()], "subject of {}", m.text());
        assert!(
            m.header("Nats-Msg-Id").is_some(),
            "subscribers can drop repeats by id"
        );
    }
    let status = worker.stop(TIMEOUT).await.unwrap();
    assert!(status.success(), "worker exit {status}\n{}", worker.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_bounded_copies_what_the_stream_held_at_start_then_exits() {
    let ex = Example::start("backfill-bounded").await;
    let js = ex.jetstream().await;
    let mut expected = Vec::new();
    for i in 0..300u32 {
        let page = ["home", "cart", "checkout"][i as usize % 3];
        expected.push(
            publish_js(
                &js,
                &format!("clicks.web.{page}"),
                format!(r#"{{"click":{i}}}"#),
            )
            .await,
        );
    }

    let mut worker = ex.worker().spawn(&ex.log("worker-1")).unwrap();
    let status = worker.wait(TIMEOUT).await.unwrap();
    assert!(
        status.success(),
        "a finished bounded run exits 0: {status}\n{}",
        worker.log()
    );
    let copied = output::messages(&js, "clicks-backfill").await.unwrap();
    assert_eq!(
        source_sequences(&copied),
        expected,
        "every stored click exactly once"
    );
    assert!(
        copied
            .iter()
            .all(|m| m.subject.starts_with("backfill.clicks.web."))
    );
    let checkpoint = ex.checkpoint("clicks-backfill");
    assert!(
        checkpoint.splits.values().all(|s| s.finished),
        "every split is finished: {checkpoint:?}"
    );

    // Clicks stored after the run are not part of it, and a rerun of a finished bounded
    // pipeline does nothing.
    for i in 0..50u32 {
        publish_js(&js, "clicks.web.home", format!(r#"{{"late":{i}}}"#)).await;
    }
    let mut rerun = ex.worker().spawn(&ex.log("worker-2")).unwrap();
    let status = rerun.wait(TIMEOUT).await.unwrap();
    assert!(status.success(), "rerun exit {status}\n{}", rerun.log());
    assert_eq!(output::count(&js, "clicks-backfill").await.unwrap(), 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_six_splits_keeps_source_order_within_each_split() {
    let ex = Example::start("parallel-six-splits").await;
    let js = ex.jetstream().await;
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
    let mut worker = ex.worker().spawn(&ex.log("worker")).unwrap();
    output::wait_for_count(&js, "transfers-ledger", 600, TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", worker.log()));
    let status = worker.stop(TIMEOUT).await.unwrap();
    assert!(status.success(), "worker exit {status}\n{}", worker.log());

    let ledger = output::messages(&js, "transfers-ledger").await.unwrap();
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
            "split transfers.{region}.> in source order, once"
        );
    }
    let checkpoint = ex.checkpoint("transfers-ledger");
    assert_eq!(checkpoint.splits.len(), 6, "six splits: {checkpoint:?}");
    for (region, sequences) in &by_region {
        assert_eq!(
            checkpoint.splits[&format!("transfers.{region}.>")].position,
            *sequences.last().unwrap()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_six_splits_shared_by_three_worker_processes_by_assignment() {
    let ex = Example::start("parallel-six-splits").await;
    let js = ex.jetstream().await;
    let regions = ["eu", "us", "apac", "latam", "mea", "anz"];
    let mut expected = Vec::new();
    for i in 0..600u32 {
        let region = regions[i as usize % 6];
        expected.push(
            publish_js(
                &js,
                &format!("transfers.{region}.t{i}"),
                format!(r#"{{"transfer":{i}}}"#),
            )
            .await,
        );
    }
    // Two splits per worker, as the operator would assign them to three pods.
    let owners: BTreeMap<String, String> = regions
        .iter()
        .enumerate()
        .map(|(i, r)| (format!("transfers.{r}.>"), format!("worker-{}", i / 2 + 1)))
        .collect();
    let assignment = ex.dir.path().join("assignment.json");
    std::fs::write(
        &assignment,
        serde_json::to_string(&serde_json::json!({"generation": 1, "owners": owners})).unwrap(),
    )
    .unwrap();
    let mut workers = Vec::new();
    for n in 1..=3 {
        let id = format!("worker-{n}");
        workers.push(
            ex.worker()
                .args([
                    "--worker-id".to_owned(),
                    id.clone(),
                    "--assignment-file".to_owned(),
                    assignment.display().to_string(),
                ])
                .spawn(&ex.log(&id))
                .unwrap(),
        );
    }
    let logs = |workers: &[jetflow_e2e::worker::WorkerProcess]| {
        workers
            .iter()
            .map(|w| w.log())
            .collect::<Vec<_>>()
            .join("\n----\n")
    };
    output::wait_for_count(&js, "transfers-ledger", 600, TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", logs(&workers)));
    for w in &mut workers {
        let status = w.stop(TIMEOUT).await.unwrap();
        assert!(status.success(), "worker exit {status}\n{}", w.log());
    }
    let ledger = output::messages(&js, "transfers-ledger").await.unwrap();
    assert_eq!(
        source_sequences(&ledger),
        expected,
        "every transfer exactly once"
    );
    let checkpoint = ex.checkpoint("transfers-ledger");
    for (split, owner) in &owners {
        assert_eq!(
            checkpoint.splits[split].owner.as_ref(),
            Some(owner),
            "{split} committed by its owner"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_secret_authenticates_with_the_mounted_secret() {
    // The server accepts only the user of the example's Secret placeholder.
    let ex = Example::start_with_server(
        "credentials-secret",
        "authorization {\n  users = [ { user: invoices, password: change-me } ]\n}\n",
        &[
            ("nats-invoices-user", "username", "invoices"),
            ("nats-invoices-user", "password", "change-me"),
        ],
    )
    .await;
    let client =
        async_nats::ConnectOptions::with_user_and_password("invoices".into(), "change-me".into())
            .connect(ex.server.url())
            .await
            .unwrap();
    let js = async_nats::jetstream::new(client);
    let mut expected = Vec::new();
    for i in 0..200u32 {
        expected.push(
            publish_js(
                &js,
                &format!("invoices.acme.{}", 2026 + i % 2),
                format!(r#"{{"invoice":{i}}}"#),
            )
            .await,
        );
    }
    let mut worker = ex.worker().spawn(&ex.log("worker")).unwrap();
    output::wait_for_count(&js, "invoices-archive", 200, TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", worker.log()));
    let status = worker.stop(TIMEOUT).await.unwrap();
    assert!(status.success(), "worker exit {status}\n{}", worker.log());
    let archived = output::messages(&js, "invoices-archive").await.unwrap();
    assert_eq!(source_sequences(&archived), expected);

    // The same pipeline with a wrong password in the Secret fails clearly and exits non-zero.
    let wrong = ex.dir.path().join("wrong-secrets");
    common::write_secret(&wrong, "nats-invoices-user", "username", "invoices");
    common::write_secret(&wrong, "nats-invoices-user", "password", "not-the-password");
    let mut refused = ex
        .worker_with_secrets(&wrong)
        .spawn(&ex.log("worker-wrong-password"))
        .unwrap();
    let status = refused.wait(TIMEOUT).await.unwrap();
    assert!(
        !status.success(),
        "a wrong password must fail\n{}",
        refused.log()
    );
    assert!(
        refused.log().to_lowercase().contains("authoriz"),
        "the error says authorization failed:\n{}",
        refused.log()
    );
}

/// Publishes to a JetStream subject with headers and returns the stored sequence.
async fn publish_js_with_headers(
    js: &async_nats::jetstream::Context,
    subject: &str,
    headers: async_nats::HeaderMap,
    payload: String,
) -> u64 {
    js.publish_with_headers(subject.to_owned(), headers, payload.into())
        .await
        .unwrap()
        .await
        .unwrap()
        .sequence
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrich_jq_keeps_paid_orders_reshaped_and_tagged() {
    let ex = Example::start("enrich-jq").await;
    let js = ex.jetstream().await;
    let client = ex.client().await;
    let dead = Collector::start(&client, "jetflow.dlq.orders-enrich")
        .await
        .unwrap();
    // Run locally, no operator creates the dead-letter stream: as a user would, the test
    // makes one (the worker never publishes dead letters where no stream keeps them).
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "orders-enrich-dlq".into(),
        subjects: vec!["jetflow.dlq.orders-enrich".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    // source sequence -> (subject, order number)
    let mut paid = BTreeMap::new();
    for i in 0..90u32 {
        let region = ["eu", "us", "apac"][i as usize % 3];
        let subject = format!("orders.{region}.created");
        let status = if i % 4 == 3 { "pending" } else { "paid" };
        let payload = format!(
            r#"{{"order_id":"o-{i}","qty":{},"price":2.5,"status":"{status}","customer":{{"name":"Customer {i}"}}}}"#,
            i % 5 + 1
        );
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Trace-Id", format!("trace-{i}").as_str());
        let seq = publish_js_with_headers(&js, &subject, headers, payload).await;
        if status == "paid" {
            paid.insert(seq, (subject, i));
        }
    }
    // Not JSON: a dead letter, not an output.
    let bad = publish_js(&js, "orders.eu.created", "not json".to_owned()).await;

    let mut worker = ex.worker().spawn(&ex.log("worker")).unwrap();
    output::wait_for_count(&js, "orders-summary", paid.len() as u64, TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", worker.log()));
    let letters = dead
        .wait_until("the dead letter", TIMEOUT, |got| !got.is_empty())
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", worker.log()));
    let status = worker.stop(TIMEOUT).await.unwrap();
    assert!(status.success(), "worker exit {status}\n{}", worker.log());

    let summaries = output::messages(&js, "orders-summary").await.unwrap();
    assert_eq!(
        source_sequences(&summaries),
        paid.keys().copied().collect::<Vec<_>>(),
        "each paid order once, no pending one"
    );
    for m in &summaries {
        let seq: u64 = m.source().sequence;
        let (subject, i) = &paid[&seq];
        let region = subject.split('.').nth(1).unwrap();
        let qty = f64::from(i % 5 + 1);
        assert_eq!(
            m.json().expect("JSON output"),
            serde_json::json!({
                "id": format!("o-{i}"),
                "total": qty * 2.5,
                "customer": format!("Customer {i}"),
                "region": region,
                "seq": seq,
            })
        );
        assert_eq!(m.subject, format!("summary.{subject}"));
        assert_eq!(m.header("Jetflow-Region").as_deref(), Some(region));
        assert_eq!(m.header("Order-Source").as_deref(), Some(subject.as_str()));
        assert_eq!(m.header("Trace-Id"), None, "dropHeaders removed it");
    }
    assert_eq!(letters.len(), 1, "one dead letter: {letters:?}");
    assert_eq!(letters[0].text(), "not json");
    assert_eq!(letters[0].source().sequence, bad);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_by_field_routes_by_tenant_and_dead_letters_the_unroutable() {
    let ex = Example::start("route-by-field").await;
    let js = ex.jetstream().await;
    let mut routed = BTreeMap::new(); // source sequence -> (expected subject, payload)
    for i in 0..60u32 {
        let tenant = ["acme", "globex", "initech"][i as usize % 3];
        let service = ["auth", "billing"][i as usize % 2];
        // Key order and spacing as a client wrote them: the payload must pass byte for byte.
        let payload = format!(r#"{{"type": "login",  "tenant": "{tenant}", "n": {i}}}"#);
        let seq = publish_js(&js, &format!("events.{service}"), payload.clone()).await;
        routed.insert(seq, (format!("tenants.{tenant}.{service}"), payload));
    }
    let no_tenant = publish_js(&js, "events.auth", r#"{"type":"login"}"#.to_owned()).await;
    let bad_tenant = publish_js(&js, "events.auth", r#"{"tenant":"a b"}"#.to_owned()).await;

    let mut worker = ex.worker().spawn(&ex.log("worker")).unwrap();
    output::wait_for_count(&js, "tenant-events", routed.len() as u64, TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", worker.log()));
    output::wait_for_count(&js, "events-dlq", 2, TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", worker.log()));
    let status = worker.stop(TIMEOUT).await.unwrap();
    assert!(status.success(), "worker exit {status}\n{}", worker.log());

    let out = output::messages(&js, "tenant-events").await.unwrap();
    assert_eq!(
        source_sequences(&out),
        routed.keys().copied().collect::<Vec<_>>()
    );
    for m in &out {
        let seq: u64 = m.source().sequence;
        let (subject, payload) = &routed[&seq];
        assert_eq!(&m.subject, subject);
        assert_eq!(&m.text(), payload, "payload unchanged");
    }
    let dlq = output::messages(&js, "events-dlq").await.unwrap();
    let mut dead: Vec<u64> = dlq
        .iter()
        .map(|m| {
            assert!(
                m.header("Jetflow-Error").is_some(),
                "error in headers: {m:?}"
            );
            m.source().sequence
        })
        .collect();
    dead.sort_unstable();
    assert_eq!(dead, vec![no_tenant, bad_tenant]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_keeps_failed_payments_with_the_error_and_carries_on() {
    let ex = Example::start("dead-letter").await;
    let js = ex.jetstream().await;
    let mut good = BTreeMap::new(); // source sequence -> (id, cents)
    let mut failed = BTreeMap::new(); // source sequence -> (payload, error kind)
    for i in 0..50u32 {
        let id = format!("p-{i}");
        match i % 10 {
            // A string amount: the step fails (eval).
            3 => {
                let payload = format!(r#"{{"id":"{id}","amount":"12,50"}}"#);
                let seq = publish_js(&js, "payments.card", payload.clone()).await;
                failed.insert(seq, (payload, "eval"));
            }
            // Not JSON at all (parse).
            7 => {
                let payload = format!("garbage {i}");
                let seq = publish_js(&js, "payments.sepa", payload.clone()).await;
                failed.insert(seq, (payload, "parse"));
            }
            // No amount: filtered out, neither output nor dead letter.
            9 => {
                publish_js(&js, "payments.card", format!(r#"{{"id":"{id}"}}"#)).await;
            }
            _ => {
                let amount = f64::from(i) + 0.25;
                let seq = publish_js(
                    &js,
                    "payments.card",
                    format!(r#"{{"id":"{id}","amount":{amount}}}"#),
                )
                .await;
                good.insert(seq, (id, (amount * 100.0).round() as i64));
            }
        }
    }
    let mut worker = ex.worker().spawn(&ex.log("worker")).unwrap();
    output::wait_for_count(&js, "payments-cents", good.len() as u64, TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", worker.log()));
    output::wait_for_count(&js, "payments-dlq", failed.len() as u64, TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", worker.log()));
    let status = worker.stop(TIMEOUT).await.unwrap();
    assert!(status.success(), "worker exit {status}\n{}", worker.log());

    let cents = output::messages(&js, "payments-cents").await.unwrap();
    assert_eq!(
        source_sequences(&cents),
        good.keys().copied().collect::<Vec<_>>()
    );
    for m in &cents {
        let seq: u64 = m.source().sequence;
        let (id, cents) = &good[&seq];
        assert_eq!(
            m.json().unwrap(),
            serde_json::json!({"id": id, "cents": cents})
        );
        assert_eq!(m.subject, "cents.payments.card");
    }
    let dlq = output::messages(&js, "payments-dlq").await.unwrap();
    assert_eq!(dlq.len(), failed.len(), "each failed payment once");
    for m in &dlq {
        let seq: u64 = m.source().sequence;
        let (payload, kind) = &failed[&seq];
        assert_eq!(&m.text(), payload, "the original message");
        assert_eq!(m.header("Jetflow-Error-Kind").as_deref(), Some(*kind));
        assert_eq!(m.source().stream, Some("payments"));
        if *kind == "eval" {
            assert_eq!(
                m.header("Jetflow-Error-Step").as_deref(),
                Some("amount-in-cents")
            );
            assert!(
                m.header("Jetflow-Error")
                    .unwrap()
                    .contains("amount is not a number"),
                "{m:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autoscale_lag_runs_locally_as_one_worker_owning_every_split() {
    let ex = Example::start("autoscale-lag").await;
    let js = ex.jetstream().await;
    let regions = ["eu", "us", "apac", "latam"];
    let mut expected = Vec::new();
    for i in 0..400u32 {
        let subject = format!("orders.{}.shop{}", regions[i as usize % 4], i % 5);
        expected.push(publish_js(&js, &subject, format!(r#"{{"order":{i}}}"#)).await);
    }
    let mut worker = ex.worker().spawn(&ex.log("worker")).unwrap();
    output::wait_for_count(&js, "orders-archive", 400, TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", worker.log()));
    let status = worker.stop(TIMEOUT).await.unwrap();
    assert!(status.success(), "worker exit {status}\n{}", worker.log());
    let archived = output::messages(&js, "orders-archive").await.unwrap();
    assert_eq!(source_sequences(&archived), expected, "every order once");
    assert!(
        archived
            .iter()
            .all(|m| m.subject.starts_with("archive.orders."))
    );
    assert_eq!(ex.checkpoint("orders-archive").splits.len(), 4);
}
