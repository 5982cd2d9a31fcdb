//! A Stream spec becomes a real JetStream stream with the declared settings, and its state
//! reads back into the Stream's status form.

use std::time::Duration;

use jetflow_crds::Stream;
use jetflow_nats::{Secrets, connect, stream_config, stream_state};
use jetflow_testsupport::NatsServer;

const MANIFEST: &str = r#"
apiVersion: jetflow.io/v1alpha1
kind: Stream
metadata: {name: orders}
spec:
  subjects: ["orders.>"]
  storage: Memory
  maxAge: 1h
  maxBytes: 64Mi
  maxMsgsPerSubject: 1000
  duplicateWindow: 30s
  description: orders from the shop
"#;

#[tokio::test]
async fn stream_spec_creates_a_stream_and_reads_its_state() {
    let server = NatsServer::start();
    let stream: Stream = serde_yaml_ng::from_str(MANIFEST).unwrap();
    let client = connect(None, &server.url(), &Secrets::new("/nonexistent"), "test")
        .await
        .unwrap();
    let js = async_nats::jetstream::new(client);

    let config = stream_config(&stream.stream_name(), &stream.spec);
    let mut created = js.create_stream(config).await.unwrap();
    for i in 0..10 {
        js.publish(format!("orders.{}", i % 3), format!("order {i}").into())
            .await
            .unwrap()
            .await
            .unwrap();
    }

    let info = created.info().await.unwrap();
    assert_eq!(info.config.name, "orders");
    assert_eq!(info.config.max_age, Duration::from_secs(3600));
    assert_eq!(info.config.max_bytes, 64 << 20);
    assert_eq!(info.config.max_messages_per_subject, 1000);
    assert_eq!(info.config.duplicate_window, Duration::from_secs(30));
    assert_eq!(
        info.config.storage,
        async_nats::jetstream::stream::StorageType::Memory
    );

    let state = stream_state(info);
    assert_eq!(state.messages, 10);
    assert_eq!(state.first_sequence, 1);
    assert_eq!(state.last_sequence, 10);
    assert!(state.bytes > 0);
}

#[tokio::test]
async fn missing_secret_file_names_the_field() {
    let conn: jetflow_crds::Connection =
        serde_yaml_ng::from_str("token: {name: nats-auth, key: token}").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let err = connect(
        Some(&conn),
        "nats://127.0.0.1:1",
        &Secrets::new(dir.path()),
        "test",
    )
    .await
    .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("connection.token"), "{text}");
    assert!(text.contains("nats-auth/token"), "{text}");
}
