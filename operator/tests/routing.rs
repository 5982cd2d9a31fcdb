//! The Pipeline reconciler's routing check against a real nats-server and an in-memory
//! Kubernetes API: outputs that the sink stream does not capture and the source stream does
//! are reported in SpecValid with the streams' names and subjects, and no worker is made.

mod common;

use std::time::Duration;

use common::{Harness, conditions, nats_stream, pipeline};
use jetflow_crds::pipeline::PipelinePhase;
use kube::runtime::controller::Action;
use serde_json::json;

const NAME: &str = "orders-echo";

#[tokio::test]
async fn outputs_into_the_source_stream_are_reported_in_spec_valid_and_retried() {
    let h = Harness::new().await;
    let js = h.nats.jetstream().await;
    nats_stream(&js, "ORDERS", &["orders.>"], Duration::from_secs(120)).await;
    nats_stream(&js, "COPY", &["copy.>"], Duration::from_secs(120)).await;
    h.create_pipeline(pipeline(
        NAME,
        json!({
            "source": {"jetstream": {"stream": "ORDERS"}},
            "steps": [{"setSubject": "{{subject}}"}],
            "sink": {"jetstream": {"stream": "COPY"}},
        }),
    ))
    .await;
    let action = h.reconcile_pipeline(NAME).await.unwrap();
    assert_eq!(
        action,
        Action::requeue(Duration::from_secs(15)),
        "retried: a Stream's subjects may change"
    );
    let st = h.pipeline(NAME).await.status.expect("status");
    assert_eq!(st.phase, Some(PipelinePhase::Failed));
    let c = conditions(&st.conditions);
    assert_eq!(c["SpecValid"], ("False".into(), "InvalidRouting".into()));
    let message = &st
        .conditions
        .iter()
        .find(|c| c.type_ == "SpecValid")
        .unwrap()
        .message;
    for part in [
        "spec.sink.jetstream.subject",
        "sink stream COPY (subjects copy.>) does not capture",
        "source stream ORDERS captures them (subject orders.>)",
    ] {
        assert!(message.contains(part), "{part}: {message}");
    }
    assert!(h.deployment(&format!("{NAME}-worker")).await.is_none());

    // The sink stream made to capture what is published: it runs.
    h.edit_pipeline(
        NAME,
        json!({"spec": {"steps": [{"setSubject": "copy.{{subject}}"}]}}),
    )
    .await;
    h.reconcile_pipeline(NAME).await.unwrap();
    assert!(h.deployment(&format!("{NAME}-worker")).await.is_some());
    let c = conditions(&h.pipeline(NAME).await.status.unwrap().conditions);
    assert_eq!(c["SpecValid"].0, "True");
}
