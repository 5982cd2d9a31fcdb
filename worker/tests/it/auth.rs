//! The worker against a nats-server that requires a user and password, read from
//! `--secrets-dir`: the right password runs the pipeline, a wrong one ends the process at once
//! with exit code 4 and a one-line error naming the connection field to check.

use std::path::Path;
use std::time::Duration;

use crate::common::*;
use crate::support::*;
use jetflow_testsupport::NatsServer;

const AUTH: &str = "authorization { users = [ { user: app, password: s3cret } ] }";

const MANIFEST: &str = r#"
apiVersion: jetflow.io/v1alpha1
kind: Pipeline
metadata:
  name: secured
spec:
  connection:
    userPassword:
      secretName: nats-user
  source:
    core:
      subjects: ["in"]
  sink:
    core:
      subject: "out"
"#;

fn secrets(dir: &Path, password: &str) -> String {
    let secret = dir.join("secrets").join("nats-user");
    std::fs::create_dir_all(&secret).unwrap();
    std::fs::write(secret.join("username"), "app").unwrap();
    std::fs::write(secret.join("password"), password).unwrap();
    dir.join("secrets").display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_exits_with_code_4_naming_the_connection_field() {
    let server = NatsServer::start_with(AUTH);
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_manifest(dir.path(), MANIFEST);
    let secrets_dir = secrets(dir.path(), "wrong");
    let mut worker = spawn(
        &manifest,
        &server.url(),
        &dir.path().join("checkpoints"),
        "w1",
        &free_addr(),
        &["--secrets-dir", &secrets_dir],
    );
    let status = worker.wait(Duration::from_secs(20));
    let log = worker.log_text();
    assert_eq!(status.code(), Some(4), "log:\n{log}");
    // The client library logs the violation too; jetflow's own error is one line.
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains("jetflow_worker"))
        .collect();
    assert_eq!(errors.len(), 1, "one error line expected:\n{log}");
    assert!(
        errors[0].contains("connection.userPassword") && errors[0].contains("refused"),
        "{}",
        errors[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn right_password_from_the_secrets_dir_runs_the_pipeline() {
    let server = NatsServer::start_with(AUTH);
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_manifest(dir.path(), MANIFEST);
    let secrets_dir = secrets(dir.path(), "s3cret\n");
    let addr = free_addr();
    let mut worker = spawn(
        &manifest,
        &server.url(),
        &dir.path().join("checkpoints"),
        "w1",
        &addr,
        &["--secrets-dir", &secrets_dir],
    );
    worker.wait_ready(Duration::from_secs(30)).await;

    let client = async_nats::ConnectOptions::with_user_and_password("app".into(), "s3cret".into())
        .connect(server.url())
        .await
        .unwrap();
    let mut out = client.subscribe("out").await.unwrap();
    client.flush().await.unwrap();
    client.publish("in", "hello".into()).await.unwrap();
    client.flush().await.unwrap();
    let received = collect(&mut out, Duration::from_secs(2)).await;
    assert_eq!(received.len(), 1);
    assert_eq!(&received[0].payload[..], b"hello");
    let status = worker.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status}; log:\n{}", worker.log_text());
}
