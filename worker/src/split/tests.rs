//! A split's window under fan-out: a message whose steps yield thousands of outputs fills the
//! window one output at a time, within its bounds in entries and bytes, however many such
//! messages the split took at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use jetflow_crds::pipeline::{ErrorAction, Step};
use jetflow_steps::Steps;
use jetflow_testsupport::NatsServer;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::metrics::Metrics;
use crate::pipeline::read::channel;
use crate::source::{AckToken, Incarnation};

/// Counts the outputs and payload bytes it is sent and never confirms them (its round trip
/// never completes).
#[derive(Clone, Default)]
struct Unconfirmed {
    outputs: Arc<AtomicUsize>,
    bytes: Arc<AtomicUsize>,
}

impl Sink for Unconfirmed {
    async fn send(
        &self,
        message: OutputMessage,
        _replies: Option<&ReplyTo>,
    ) -> Result<Confirmation, SinkError> {
        self.outputs.fetch_add(1, Ordering::Relaxed);
        self.bytes
            .fetch_add(message.payload.len(), Ordering::Relaxed);
        Ok(Confirmation::Sent { generation: 0 })
    }

    async fn round_trip(&self) -> Result<Option<u64>, SinkError> {
        std::future::pending().await
    }

    fn deduplicates(&self) -> bool {
        false
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_out_behind_its_sink_holds_at_most_the_windows_bounds() {
    let server = NatsServer::start();
    let client = async_nats::connect(server.url()).await.expect("connect");
    let (_pause, paused) = tokio::sync::watch::channel(false);
    let step: Step = serde_json::from_value(serde_json::json!({"name": "fan", "map": ".items[]"}))
        .expect("step");
    let sink = Unconfirmed::default();
    let budget = Budget::new();
    let max_pending = 1024;
    let shared = Arc::new(Shared {
        source: jetflow_nats::source_header::Prefix::new("orders"),
        steps: Arc::new(Steps::compile(&[step]).expect("compiles")),
        template: SubjectTemplate::compile_subject_only("out.{{subject}}").expect("template"),
        sink: sink.clone(),
        dead_letters: crate::sink::dead_letter::DeadLetters::new(client, "dlq").await,
        policy: ErrorAction::Stop,
        max_pending,
        max_pending_bytes: PENDING_BYTES,
        budget: budget.clone(),
        paused,
        pipeline: "default/p".to_owned(),
    });
    let _member = budget.join();
    let metrics = Metrics::new().split("s");
    let task = SplitTask::new(
        shared,
        "s",
        MessageIds::new("default", "p", "s"),
        metrics,
        SplitSnapshot::default(),
        Duration::from_secs(60),
    );
    // 32 messages of 10,000 items each, all in the reader channel before the task starts:
    // the task takes them in one batch.
    let items: Vec<String> = (0..10_000).map(|i| format!("{{\"i\":{i}}}")).collect();
    let payload = bytes::Bytes::from(format!("{{\"items\":[{}]}}", items.join(",")));
    let (tx, rx) = channel(64, Budget::new());
    let (_control, control_rx) = mpsc::channel(4);
    let cancel = CancellationToken::new();
    let feeder = tokio::spawn(async move {
        for seq in 1..=32 {
            let message = SourceMessage {
                subject: "orders.eu".into(),
                headers: None,
                payload: payload.clone(),
                seq,
                ack: AckToken(None),
                stream: Incarnation::default(),
            };
            if tx.send(Read::Message(message)).await.is_err() {
                return;
            }
        }
        std::future::pending::<()>().await;
    });
    let run = tokio::spawn(task.run(rx, control_rx, cancel));
    // Until nothing was sent for a second (the window is full and waits for its round trip).
    let (mut last, mut still) = (0, 0);
    for _ in 0..600 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = sink.outputs.load(Ordering::Relaxed);
        still = if now == last && now > 0 { still + 1 } else { 0 };
        last = now;
        if still >= 10 || now > 2 * max_pending {
            break;
        }
    }
    run.abort();
    feeder.abort();
    let (outputs, bytes) = (
        sink.outputs.load(Ordering::Relaxed),
        sink.bytes.load(Ordering::Relaxed),
    );
    assert!(outputs > 0, "nothing was sent");
    assert!(
        outputs <= max_pending,
        "{outputs} outputs unconfirmed: more than the window's {max_pending}"
    );
    assert!(
        bytes <= budget.pending_bytes(PENDING_BYTES) + 16,
        "{bytes} bytes of outputs unconfirmed: more than the window's {} bytes",
        budget.pending_bytes(PENDING_BYTES)
    );
}
