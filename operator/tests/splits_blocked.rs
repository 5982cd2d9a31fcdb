//! More splits than the source stream allows consumers (`max_consumers`), against the
//! in-memory API and a real nats-server: the operator reads the limit before it creates
//! consumers, creates those that fit (the pipeline runs on them), asks the server for none
//! beyond it, and reports the others in `Degraded` / `SplitsBlocked`, naming the limit and how
//! many splits have no consumer.

mod common;

use std::time::Duration;

use async_nats::jetstream::stream;
use common::{Harness, nats_stream, pipeline};
use futures::TryStreamExt;
use jetflow_crds::condition::{find, types};
use serde_json::json;

const NAME: &str = "limited";

async fn consumers(js: &async_nats::jetstream::Context) -> Vec<String> {
    js.get_stream("EVENTS")
        .await
        .expect("EVENTS")
        .consumer_names()
        .try_collect()
        .await
        .expect("consumer names")
}

#[tokio::test]
async fn splits_beyond_max_consumers_are_reported_blocked_and_the_others_run() {
    let h = Harness::new().await;
    let js = h.nats.jetstream().await;
    js.create_stream(stream::Config {
        name: "EVENTS".into(),
        subjects: vec!["events.>".into()],
        max_consumers: 5,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .expect("EVENTS");
    nats_stream(&js, "COPY", &["copy.>"], Duration::from_secs(120)).await;
    for i in 0..10 {
        js.publish(format!("events.s{i}"), "{}".into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    h.create_pipeline(pipeline(
        NAME,
        json!({
            "source": {"jetstream": {"stream": "EVENTS", "filterSubjects": ["events.>"], "splitBy": "Subject"}},
            "sink": {"jetstream": {"stream": "COPY", "subject": "copy.{{subject}}"}},
            "checkpoint": {"interval": "5s"},
        }),
    ))
    .await;
    h.reconcile_pipeline(NAME)
        .await
        .expect("the reconcile goes on past the limit");

    assert_eq!(consumers(&js).await.len(), 5, "the consumers that fit");
    assert!(
        h.deployment(&format!("{NAME}-worker")).await.is_some(),
        "the pipeline runs on the splits that have a consumer"
    );
    // Looked at again, the operator asks the server nothing it must refuse: the lookups of
    // the 5 missing consumers fail (not found), and no create beyond the limit is sent.
    let errors_before = js.query_account().await.expect("account").requests.errors;
    h.reconcile_pipeline(NAME).await.expect("reconcile again");
    let errors_after = js.query_account().await.expect("account").requests.errors;
    assert_eq!(
        errors_after - errors_before,
        5,
        "JetStream API errors of one reconcile: the operator asked for consumers beyond the limit"
    );
    assert_eq!(consumers(&js).await.len(), 5);
    let status = h.pipeline(NAME).await.status.expect("status");
    let degraded = find(&status.conditions, types::DEGRADED).expect("Degraded");
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", "SplitsBlocked"),
        "{degraded:?}"
    );
    assert!(
        degraded
            .message
            .starts_with("5 of 10 splits have no consumer")
            && degraded
                .message
                .contains("max_consumers of stream EVENTS is 5"),
        "{}",
        degraded.message
    );
    assert!(
        h.event_reasons(NAME).await.iter().all(|r| r != "Failed"),
        "no failed reconcile"
    );
}
