//! The runner in-process against a real nats-server: a pass-through pipeline over several
//! splits, and the error policy plumbing (dead letters, skip, stop) driven by messages whose
//! output subject cannot be rendered.

use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use jetflow_crds::Pipeline;
use jetflow_crds::split::static_splits;
use jetflow_testsupport::NatsServer;
use jetflow_worker::checkpoint::{CheckpointStore, FileStore};
use jetflow_worker::http::Health;
use jetflow_worker::{Metrics, RunOutcome, Runner, RunnerConfig};
use tokio_util::sync::CancellationToken;

fn pipeline(text: &str) -> Pipeline {
    let dir = tempfile::tempdir().unwrap();
    let path = write_manifest(dir.path(), text);
    let p = jetflow_crds::manifest::load_pipeline(&path, None).unwrap();
    jetflow_crds::validate::pipeline(&p).unwrap();
    p
}

struct Running {
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<Result<RunOutcome, jetflow_worker::RunError>>,
    metrics: Metrics,
}

async fn start(server: &NatsServer, p: Pipeline, store: Arc<dyn CheckpointStore>) -> Running {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let splits = static_splits(&p.spec);
    let metrics = Metrics::new();
    let runner = Runner::new(
        RunnerConfig {
            pipeline: p,
            worker_id: "in-process".into(),
            generation: 0,
            shutdown_timeout: Duration::from_secs(20),
        },
        server.client().await,
        store,
        metrics.clone(),
        Arc::new(Health::default()),
    )
    .await
    .unwrap();
    let cancel = CancellationToken::new();
    let task = tokio::spawn(runner.run(splits, cancel.clone()));
    Running {
        cancel,
        task,
        metrics,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_delivers_every_message_in_split_order() {
    let server = NatsServer::start();
    let js = server.jetstream().await;
    create_stream(&js, "events", &["events.>"]).await;
    create_stream(&js, "mirror", &["mirror.>"]).await;
    let subjects = ["events.a", "events.b", "events.c", "events.d"];
    let published = publish(&js, &subjects, 120_000, 32).await;

    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn CheckpointStore> = Arc::new(FileStore::new(dir.path(), "default", "fan"));
    let p = pipeline(
        r#"
apiVersion: jetflow.io/v1alpha1
kind: Pipeline
metadata: {name: fan}
spec:
  source:
    jetstream:
      stream: events
      filterSubjects: ["events.a", "events.b", "events.c", "events.d"]
  sink:
    jetstream:
      stream: mirror
      subject: "mirror.{{token(2)}}"
  checkpoint: {interval: 500ms}
"#,
    );
    let run = start(&server, p, store.clone()).await;
    wait_for_len(&js, "mirror", 120_000, Duration::from_secs(180)).await;
    run.cancel.cancel();
    assert_eq!(run.task.await.unwrap().unwrap(), RunOutcome::Completed);

    let records = read_all(&js, "mirror").await;
    assert_exactly_once(&records, 1..=120_000);
    for subject in subjects {
        let token = subject.rsplit('.').next().unwrap();
        let out: Vec<u64> = records
            .iter()
            .filter(|r| r.source_subject == subject)
            .map(|r| r.source_seq)
            .collect();
        assert_eq!(
            out, published[subject],
            "source order within split {subject}"
        );
        assert!(
            records
                .iter()
                .filter(|r| r.source_subject == subject)
                .all(|r| r.subject == format!("mirror.{token}")
                    && r.payload.len() == 32
                    && r.msg_id.starts_with("default/fan:"))
        );
    }
    let checkpoint = store.load().await.unwrap().checkpoint;
    for subject in subjects {
        assert_eq!(
            checkpoint.splits[subject].position,
            *published[subject].last().unwrap()
        );
    }
    let text = run.metrics.encode();
    assert!(
        text.contains(r#"jetflow_worker_messages_total{direction="out",split="events.c"} 30000"#),
        "{text}"
    );
}

fn policy_pipeline(name: &str, policy: &str) -> Pipeline {
    pipeline(&format!(
        r#"
apiVersion: jetflow.io/v1alpha1
kind: Pipeline
metadata: {{name: {name}}}
spec:
  source:
    jetstream: {{stream: events}}
  sink:
    jetstream:
      stream: mirror
      subject: "mirror.{{{{token(3)}}}}"
  checkpoint: {{interval: 200ms}}
  errors: {{policy: {policy}}}
"#
    ))
}

/// Publishes ten messages; the fifth has a two-token subject, which the sink's template
/// (`mirror.{{token(3)}}`) cannot render.
async fn publish_with_one_bad(js: &async_nats::jetstream::Context) {
    for i in 1..=10u32 {
        let subject = if i == 5 {
            "events.bad".to_owned()
        } else {
            format!("events.ok.{i}")
        };
        js.publish(subject, format!("{{\"n\":{i}}}").into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_message_goes_to_the_dead_letter_stream_with_its_error() {
    let server = NatsServer::start();
    let js = server.jetstream().await;
    create_stream(&js, "events", &["events.>"]).await;
    create_stream(&js, "mirror", &["mirror.>"]).await;
    create_stream(&js, "dlq", &["jetflow.dlq.>"]).await;
    publish_with_one_bad(&js).await;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn CheckpointStore> = Arc::new(FileStore::new(dir.path(), "default", "dl"));
    let run = start(&server, policy_pipeline("dl", "Dlq"), store.clone()).await;
    wait_for_len(&js, "mirror", 9, Duration::from_secs(30)).await;
    wait_for_len(&js, "dlq", 1, Duration::from_secs(30)).await;
    run.cancel.cancel();
    assert_eq!(run.task.await.unwrap().unwrap(), RunOutcome::Completed);

    let dead = read_all(&js, "dlq").await;
    assert_eq!(dead.len(), 1);
    let d = &dead[0];
    assert_eq!(d.subject, "jetflow.dlq.dl");
    assert_eq!(d.source_seq, 5);
    assert_eq!(d.source_subject, "events.bad");
    assert_eq!(&d.payload[..], br#"{"n":5}"#);
    let header = |n: &str| d.headers.get(n).map(|v| v.as_str().to_owned());
    assert_eq!(
        header("Jetflow-Error-Step").as_deref(),
        Some("sink.subject")
    );
    assert_eq!(header("Jetflow-Error-Kind").as_deref(), Some("template"));
    assert!(header("Jetflow-Error").unwrap().contains("token 3"));
    assert_eq!(d.source_stream.as_deref(), Some("events"));
    // The dead letter counts as processed: the position passes it.
    assert_eq!(
        store.load().await.unwrap().checkpoint.splits[">"].position,
        10
    );
    assert!(run.metrics.encode().contains(r#"kind="dead_letter""#));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_policy_drops_and_counts_the_failed_message() {
    let server = NatsServer::start();
    let js = server.jetstream().await;
    create_stream(&js, "events", &["events.>"]).await;
    create_stream(&js, "mirror", &["mirror.>"]).await;
    publish_with_one_bad(&js).await;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn CheckpointStore> = Arc::new(FileStore::new(dir.path(), "default", "sk"));
    let run = start(&server, policy_pipeline("sk", "Skip"), store.clone()).await;
    wait_for_len(&js, "mirror", 9, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    run.cancel.cancel();
    assert_eq!(run.task.await.unwrap().unwrap(), RunOutcome::Completed);
    let records = read_all(&js, "mirror").await;
    assert_exactly_once(&records, (1..=10).filter(|s| *s != 5));
    assert_eq!(
        store.load().await.unwrap().checkpoint.splits[">"].position,
        10
    );
    assert!(
        run.metrics
            .encode()
            .contains(r#"jetflow_worker_errors_total{kind="skipped",split=">"} 1"#)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_policy_keeps_the_last_good_position_and_reports() {
    let server = NatsServer::start();
    let js = server.jetstream().await;
    create_stream(&js, "events", &["events.>"]).await;
    create_stream(&js, "mirror", &["mirror.>"]).await;
    publish_with_one_bad(&js).await;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn CheckpointStore> = Arc::new(FileStore::new(dir.path(), "default", "st"));
    let run = start(&server, policy_pipeline("st", "Stop"), store.clone()).await;
    // Every split stopped: the run ends by itself.
    let outcome = tokio::time::timeout(Duration::from_secs(30), run.task)
        .await
        .expect("run ends when every split stopped")
        .unwrap()
        .unwrap();
    match outcome {
        RunOutcome::Stopped(reasons) => {
            assert!(reasons[">"].contains("message 5"), "{reasons:?}")
        }
        other => panic!("expected Stopped, got {other:?}"),
    }
    assert_eq!(stream_len(&js, "mirror").await, 4);
    assert_eq!(
        store.load().await.unwrap().checkpoint.splits[">"].position,
        4
    );
    assert!(
        run.metrics
            .encode()
            .contains(r#"jetflow_worker_split_stopped{split=">"} 1"#)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_larger_than_a_splits_share_of_the_pull_budget_is_delivered_in_order() {
    // The worker's pull budget is 1 MiB (a quarter each for four splits); a 2 MiB message
    // fits the server's max_payload, so the split that meets it must take it, and the
    // messages after it, in order.
    let server = NatsServer::start_with("max_payload: 4MB\n");
    let js = server.jetstream().await;
    create_stream(&js, "events", &["events.>"]).await;
    create_stream(&js, "mirror", &["mirror.>"]).await;
    let subjects = ["events.a", "events.b", "events.c", "events.d"];
    let mut published = publish(&js, &subjects, 400, 32).await;
    let large = js
        .publish("events.a", bytes::Bytes::from(vec![b'L'; 2 << 20]))
        .await
        .expect("publish")
        .await
        .expect("publish ack")
        .sequence;
    published.get_mut("events.a").unwrap().push(large);
    for (subject, seqs) in publish(&js, &subjects, 400, 32).await {
        published.get_mut(&subject).unwrap().extend(seqs);
    }

    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn CheckpointStore> = Arc::new(FileStore::new(dir.path(), "default", "big"));
    let p = pipeline(
        r#"
apiVersion: jetflow.io/v1alpha1
kind: Pipeline
metadata: {name: big}
spec:
  source:
    jetstream:
      stream: events
      filterSubjects: ["events.a", "events.b", "events.c", "events.d"]
  sink:
    jetstream:
      stream: mirror
      subject: "mirror.{{token(2)}}"
  checkpoint: {interval: 500ms}
"#,
    );
    let run = start(&server, p, store.clone()).await;
    wait_for_len(&js, "mirror", 801, Duration::from_secs(60)).await;
    run.cancel.cancel();
    assert_eq!(run.task.await.unwrap().unwrap(), RunOutcome::Completed);

    let records = read_all(&js, "mirror").await;
    assert_exactly_once(&records, 1..=801);
    for subject in subjects {
        let out: Vec<u64> = records
            .iter()
            .filter(|r| r.source_subject == subject)
            .map(|r| r.source_seq)
            .collect();
        assert_eq!(
            out, published[subject],
            "source order within split {subject}"
        );
    }
    let delivered = records.iter().find(|r| r.source_seq == large).unwrap();
    assert_eq!(delivered.payload.len(), 2 << 20);
    // The split took it by sizing its pulls for any message once it was held up.
    let text = run.metrics.encode();
    assert!(
        text.lines()
            .any(|l| l.starts_with("jetflow_worker_errors_total")
                && l.contains(r#"kind="large_message""#)
                && l.contains(r#"split="events.a""#)),
        "{text}"
    );
}
