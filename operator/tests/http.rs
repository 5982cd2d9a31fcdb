//! The operator's /metrics and /healthz, served over a real socket.

use std::sync::Arc;
use std::time::Duration;

use jetflow_operator::metrics::Metrics;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

#[tokio::test]
async fn metrics_and_health_are_served() {
    let metrics = Arc::new(Metrics::new());
    {
        let _timer = metrics.reconcile("pipeline");
    }
    metrics.error("pipeline", "conflict");
    let port = jetflow_testsupport::free_port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(jetflow_operator::http::serve(
        addr,
        metrics.clone(),
        async {
            let _ = stopped.await;
        },
    ));
    let mut health = String::new();
    for _ in 0..50 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            health = get(addr, "/healthz").await;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        health.starts_with("HTTP/1.0 200") || health.starts_with("HTTP/1.1 200"),
        "{health}"
    );
    let body = get(addr, "/metrics").await;
    assert!(
        body.contains(r#"jetflow_operator_reconciles_total{controller="pipeline"} 1"#),
        "{body}"
    );
    assert!(body.contains(
        r#"jetflow_operator_reconcile_errors_total{category="conflict",controller="pipeline"} 1"#
    ));
    assert!(
        body.contains(
            "jetflow_operator_reconcile_duration_seconds_count{controller=\"pipeline\"} 1"
        )
    );
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}
