//! What the tests do in NATS: publish input into a source stream and read what a pipeline
//! wrote (through `jetflow_e2e::output`, shared with the tests without a cluster).

pub use jetflow_e2e::output::{Collector, Message, count, messages, wait_for_count};

/// Publishes to a JetStream subject and returns the stored sequence.
pub async fn publish_js(
    js: &async_nats::jetstream::Context,
    subject: &str,
    payload: String,
) -> u64 {
    js.publish(subject.to_owned(), payload.into())
        .await
        .unwrap_or_else(|e| panic!("publish to {subject}: {e}"))
        .await
        .unwrap_or_else(|e| panic!("ack of {subject}: {e}"))
        .sequence
}

/// The `Jetflow-Source-Sequence` of each output, sorted: equal to the source sequences when
/// every source message arrived exactly once.
pub fn source_sequences(messages: &[Message]) -> Vec<u64> {
    let mut seqs: Vec<u64> = messages
        .iter()
        .map(|m| {
            m.header("Jetflow-Source-Sequence")
                .unwrap_or_else(|| panic!("{} has no Jetflow-Source-Sequence", m.subject))
                .parse()
                .expect("a sequence number")
        })
        .collect();
    seqs.sort_unstable();
    seqs
}

/// Publishes `count` orders numbered from `from` to `orders.eu.*` and `orders.us.*` (both
/// splits of the passthrough example) and returns their sequences.
pub async fn publish_orders(
    js: &async_nats::jetstream::Context,
    from: u32,
    count: u32,
) -> Vec<u64> {
    let mut seqs = Vec::with_capacity(count as usize);
    for i in from..from + count {
        let region = ["eu", "us"][i as usize % 2];
        let subject = format!("orders.{region}.shop{}", i % 3);
        seqs.push(publish_js(js, &subject, format!(r#"{{"order":{i}}}"#)).await);
    }
    seqs
}

/// Orders published in the background ([`publish_orders`], `per_tick` every 20 ms) while a test
/// scales, kills or fails over; [`Traffic::stop`] returns what was stored.
pub struct Traffic {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<Vec<u64>>,
}

impl Traffic {
    /// Starts publishing.
    pub fn start(js: async_nats::jetstream::Context, per_tick: u32) -> Self {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut seqs = Vec::new();
            let mut i = 1_000_000u32;
            while !flag.load(Ordering::Relaxed) {
                seqs.extend(publish_orders(&js, i, per_tick).await);
                i += per_tick;
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            seqs
        });
        Self { stop, task }
    }

    /// Stops publishing; the sequences of every order stored.
    pub async fn stop(self) -> Vec<u64> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.task.await.expect("the traffic task")
    }
}
