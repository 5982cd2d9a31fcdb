//! The operator's /metrics and /healthz, served over a real socket.

use std::sync::Arc;
use std::time::Duration;

use jetflow_operator::metrics::Metrics;
use jetflow_testsupport::http::{self, Response};

/// GET `path` off the runtime's threads (the server runs on them).
async fn get(addr: std::net::SocketAddr, path: &'static str) -> Option<Response> {
    tokio::task::spawn_blocking(move || http::get(&addr.to_string(), path))
        .await
        .unwrap()
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
    let mut health = None;
    for _ in 0..50 {
        health = get(addr, "/healthz").await;
        if health.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        health.is_some_and(|r| r.is_ok()),
        "/healthz did not answer 200"
    );
    let body = get(addr, "/metrics").await.expect("/metrics").body;
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
