//! A source consumer without acknowledgements (a `Limits` stream) never sends a message twice,
//! so deliveries lost on the network must be found by the reader: the worker reads through a
//! proxy whose connections are cut again and again while messages flow, and every source
//! message still reaches the sink exactly once.

use std::time::Duration;

use async_nats::jetstream::consumer::AckPolicy;

use crate::common::*;
use jetflow_crds::split::consumer_name;
use jetflow_testsupport::NatsServer;
use jetflow_testsupport::proxy::Proxy;

const SUBJECTS: [&str; 3] = ["orders.eu", "orders.us", "orders.asia"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_lost_when_connections_drop_are_read_again() {
    let server = NatsServer::start();
    let js = server.jetstream().await;
    create_stream(&js, "orders", &["orders.>"]).await;
    create_stream(&js, "copy", &["copy.>"]).await;
    let proxy = Proxy::start(server.port());
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = dir.path().join("checkpoints");
    let path = write_manifest(
        dir.path(),
        r#"
apiVersion: jetflow.io/v1alpha1
kind: Pipeline
metadata:
  name: cut
spec:
  source:
    jetstream:
      stream: orders
      filterSubjects: ["orders.eu", "orders.us", "orders.asia"]
  sink:
    jetstream:
      stream: copy
      subject: "copy.{{subject}}"
      maxPending: 100000
  checkpoint:
    interval: 500ms
"#,
    );
    // A backlog, read at full speed while the connections are cut: deliveries are in flight
    // at every cut.
    const TOTAL: usize = 100_000;
    let published = publish(&js, &SUBJECTS, TOTAL, 512).await;
    let mut worker = Worker::start(&path, &proxy.url(), &checkpoints, &[]);
    // Cut only once the worker runs (a worker that cannot connect at its start exits, for its
    // pod to be restarted) and outputs flow.
    worker.wait_started(Duration::from_secs(30));
    wait_for_len(&js, "copy", 1, Duration::from_secs(30)).await;
    // Each cut once outputs flow again after the one before (an ack lost in a cut is waited
    // for until its timeout), so that reading is under way at every cut.
    let mut cuts = 0;
    let mut at = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let len = stream_len(&js, "copy").await;
        if len >= TOTAL as u64 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "stream copy holds {len} of {TOTAL} messages after {cuts} cuts; worker log:\n{}",
            worker.log_text()
        );
        if cuts < 8 && len >= at + 4_000 {
            cuts += proxy.cut_after(Duration::from_millis(100));
            at = len;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let lasts: Vec<u64> = SUBJECTS
        .iter()
        .map(|s| *published[*s].last().unwrap())
        .collect();
    wait_for_positions(&checkpoints, "cut", &lasts).await;
    let lost = worker.metric("jetflow_worker_errors_total", &[r#"kind="lost_delivery""#]);
    eprintln!("{cuts} connections cut; {lost} losses found");
    assert!(
        worker.child.try_wait().unwrap().is_none(),
        "worker exited; log:\n{}",
        worker.log_text()
    );
    let status = worker.terminate(Duration::from_secs(30));
    assert!(status.success(), "exit {status}");

    let records = read_all(&js, "copy").await;
    assert_exactly_once(&records, 1..=TOTAL as u64);
    // The splits were read without acks, and the cuts did lose deliveries on the way (else
    // this test would not have tested their recovery).
    let stream = js.get_stream("orders").await.unwrap();
    for subject in SUBJECTS {
        let info = stream
            .consumer_info(consumer_name("default", "cut", subject))
            .await
            .unwrap();
        assert_eq!(info.config.ack_policy, AckPolicy::None);
        assert_eq!(info.num_ack_pending, 0);
    }
    assert!(
        lost > 0.0,
        "no delivery was lost in {cuts} cuts; worker log:\n{}",
        worker.log_text()
    );
}
