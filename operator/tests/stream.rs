//! The Stream reconciler against an in-memory Kubernetes API and a real nats-server: create,
//! adopt, update in place, report what cannot change, repair drift, observe read-only, and
//! delete only by policy.

mod common;

use std::time::Duration;

use async_nats::jetstream::stream::{RetentionPolicy, StorageType};
use common::{Harness, conditions, nats_stream, stream};
use jetflow_crds::Stream;
use serde_json::json;

async fn info(h: &Harness, name: &str) -> Option<async_nats::jetstream::stream::Info> {
    let js = h.nats.jetstream().await;
    js.get_stream(name)
        .await
        .ok()
        .map(|s| s.cached_info().clone())
}

#[tokio::test]
async fn stream_is_created_and_its_state_mirrored() {
    let h = Harness::new().await;
    h.create_stream(stream(
        "orders",
        json!({"name": "ORDERS", "subjects": ["orders.>"], "maxAge": "24h", "duplicateWindow": "5m"}),
    ))
    .await;
    h.reconcile_stream("orders").await.unwrap();
    let i = info(&h, "ORDERS").await.expect("created");
    assert_eq!(i.config.subjects, vec!["orders.>"]);
    assert_eq!(i.config.max_age, Duration::from_secs(86400));
    assert_eq!(i.config.duplicate_window, Duration::from_secs(300));

    let js = h.nats.jetstream().await;
    js.publish("orders.eu", "x".into())
        .await
        .unwrap()
        .await
        .unwrap();
    h.reconcile_stream("orders").await.unwrap();
    let st = h.stream("orders").await.status.unwrap();
    assert_eq!(st.stream_name.as_deref(), Some("ORDERS"));
    assert_eq!(st.state.unwrap().messages, 1);
    let c = conditions(&st.conditions);
    assert_eq!(c["Ready"], ("True".into(), "Synced".into()));
    assert_eq!(c["Degraded"].0, "False");
    assert_eq!(h.event_reasons("orders").await, vec!["Created"]);
    h.assert_calls_permitted();

    // Nothing changed: no write to Kubernetes.
    h.clear_calls();
    h.reconcile_stream("orders").await.unwrap();
    assert_eq!(h.writes(), vec![]);
}

#[tokio::test]
async fn existing_stream_is_adopted_with_its_data() {
    let h = Harness::new().await;
    let js = h.nats.jetstream().await;
    nats_stream(&js, "ORDERS", &["orders.>"], Duration::from_secs(120)).await;
    for _ in 0..3 {
        js.publish("orders.eu", "x".into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    h.create_stream(stream(
        "orders",
        json!({"name": "ORDERS", "subjects": ["orders.>"]}),
    ))
    .await;
    h.reconcile_stream("orders").await.unwrap();
    assert_eq!(
        info(&h, "ORDERS").await.unwrap().state.messages,
        3,
        "data kept"
    );
    assert_eq!(h.event_reasons("orders").await, vec!["Adopted"]);
    let st = h.stream("orders").await.status.unwrap();
    assert_eq!(st.state.unwrap().messages, 3);
}

#[tokio::test]
async fn limits_change_in_place_and_storage_change_is_reported() {
    let h = Harness::new().await;
    h.create_stream(stream(
        "orders",
        json!({"name": "ORDERS", "subjects": ["orders.>"]}),
    ))
    .await;
    h.reconcile_stream("orders").await.unwrap();
    h.edit_stream(
        "orders",
        json!({"spec": {"maxMsgs": 100, "subjects": ["orders.>", "refunds.>"], "storage": "Memory"}}),
    )
    .await;
    h.reconcile_stream("orders").await.unwrap();
    let i = info(&h, "ORDERS").await.unwrap();
    assert_eq!(i.config.max_messages, 100, "updated in place");
    assert_eq!(i.config.subjects, vec!["orders.>", "refunds.>"]);
    assert_eq!(i.config.storage, StorageType::File, "storage cannot change");
    let st = h.stream("orders").await.status.unwrap();
    let c = conditions(&st.conditions);
    assert_eq!(c["Degraded"], ("True".into(), "CannotChange".into()));
    let message = &st
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded")
        .unwrap()
        .message;
    assert!(message.contains("storage"), "{message}");
    assert!(
        h.event_reasons("orders")
            .await
            .contains(&"Updated".to_owned())
    );
}

#[tokio::test]
async fn drift_is_repaired_hand_edit_set_back_and_deleted_stream_recreated() {
    let h = Harness::new().await;
    h.create_stream(stream(
        "orders",
        json!({"name": "ORDERS", "subjects": ["orders.>"]}),
    ))
    .await;
    h.reconcile_stream("orders").await.unwrap();
    let js = h.nats.jetstream().await;

    // Someone edits the stream with the nats CLI.
    let mut edited = info(&h, "ORDERS").await.unwrap().config;
    edited.max_messages = 5;
    js.update_stream(&edited).await.unwrap();
    h.reconcile_stream("orders").await.unwrap();
    assert_eq!(
        info(&h, "ORDERS").await.unwrap().config.max_messages,
        -1,
        "set back"
    );
    assert!(
        h.event_reasons("orders")
            .await
            .contains(&"Reverted".to_owned())
    );

    // Someone deletes it (or a memory-store server restarted).
    js.delete_stream("ORDERS").await.unwrap();
    h.reconcile_stream("orders").await.unwrap();
    assert!(info(&h, "ORDERS").await.is_some(), "recreated");
    assert!(
        h.event_reasons("orders")
            .await
            .contains(&"Recreated".to_owned())
    );
}

#[tokio::test]
async fn observe_mode_reports_and_never_writes() {
    let h = Harness::new().await;
    h.create_stream(stream(
        "orders",
        json!({"name": "ORDERS", "mode": "Observe", "subjects": ["orders.>"], "maxMsgs": 7}),
    ))
    .await;
    h.reconcile_stream("orders").await.unwrap();
    assert!(info(&h, "ORDERS").await.is_none(), "never created");
    let st = h.stream("orders").await.status.unwrap();
    assert_eq!(
        conditions(&st.conditions)["Ready"],
        ("False".into(), "StreamNotFound".into())
    );

    let js = h.nats.jetstream().await;
    nats_stream(&js, "ORDERS", &["other.>"], Duration::from_secs(120)).await;
    js.publish("other.x", "x".into())
        .await
        .unwrap()
        .await
        .unwrap();
    h.reconcile_stream("orders").await.unwrap();
    let i = info(&h, "ORDERS").await.unwrap();
    assert_eq!(
        i.config.subjects,
        vec!["other.>"],
        "not changed to the spec"
    );
    assert_eq!(i.config.max_messages, -1);
    let st = h.stream("orders").await.status.unwrap();
    assert_eq!(
        conditions(&st.conditions)["Ready"],
        ("True".into(), "Observed".into())
    );
    assert_eq!(st.state.unwrap().messages, 1);
}

#[tokio::test]
async fn deleting_a_stream_keeps_the_data_by_default() {
    let h = Harness::new().await;
    h.create_stream(stream(
        "orders",
        json!({"name": "ORDERS", "subjects": ["orders.>"]}),
    ))
    .await;
    h.reconcile_stream("orders").await.unwrap();
    let h = h.mark_deleted::<Stream>("orders").await;
    h.reconcile_stream("orders").await.unwrap();
    assert!(h.api::<Stream>().get_opt("orders").await.unwrap().is_none());
    assert!(
        info(&h, "ORDERS").await.is_some(),
        "Retain keeps the stream"
    );
    assert!(
        h.event_reasons("orders")
            .await
            .contains(&"Retained".to_owned())
    );
}

#[tokio::test]
async fn deleting_a_stream_with_policy_delete_removes_it() {
    let h = Harness::new().await;
    h.create_stream(stream(
        "orders",
        json!({"name": "ORDERS", "subjects": ["orders.>"], "deletionPolicy": "Delete"}),
    ))
    .await;
    h.reconcile_stream("orders").await.unwrap();
    assert!(info(&h, "ORDERS").await.is_some());
    let h = h.mark_deleted::<Stream>("orders").await;
    h.reconcile_stream("orders").await.unwrap();
    assert!(h.api::<Stream>().get_opt("orders").await.unwrap().is_none());
    assert!(
        info(&h, "ORDERS").await.is_none(),
        "Delete removes the stream"
    );
    h.assert_calls_permitted();
}

#[tokio::test]
async fn invalid_stream_spec_is_reported_and_waits() {
    let h = Harness::new().await;
    h.create_stream(stream(
        "orders",
        json!({"name": "ORDERS", "subjects": ["orders..x"]}),
    ))
    .await;
    let action = h.reconcile_stream("orders").await.unwrap();
    assert_eq!(action, kube::runtime::controller::Action::await_change());
    let st = h.stream("orders").await.status.unwrap();
    assert_eq!(
        conditions(&st.conditions)["SpecValid"],
        ("False".into(), "InvalidSpec".into())
    );
    assert!(info(&h, "ORDERS").await.is_none());
}

#[tokio::test]
async fn retention_change_the_server_refuses_is_reported() {
    let h = Harness::new().await;
    h.create_stream(stream(
        "orders",
        json!({"name": "ORDERS", "subjects": ["orders.>"]}),
    ))
    .await;
    h.reconcile_stream("orders").await.unwrap();
    h.edit_stream(
        "orders",
        json!({"spec": {"retention": "WorkQueue", "maxMsgs": 50}}),
    )
    .await;
    h.reconcile_stream("orders").await.unwrap();
    let i = info(&h, "ORDERS").await.unwrap();
    // nats-server refuses a change to or from WorkQueue.
    assert_eq!(i.config.retention, RetentionPolicy::Limits);
    assert_eq!(i.config.max_messages, 50, "the rest is brought in line");
    let st = h.stream("orders").await.status.unwrap();
    assert_eq!(
        conditions(&st.conditions)["Degraded"],
        ("True".into(), "CannotChange".into())
    );
    let message = &st
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded")
        .unwrap()
        .message;
    assert!(message.contains("retention"), "{message}");
    assert!(
        message.contains("workqueue"),
        "the server's reason is quoted: {message}"
    );
}
