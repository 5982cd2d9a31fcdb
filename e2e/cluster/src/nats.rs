//! What the tests do in NATS: publish input into a source stream and read what a pipeline
//! wrote (through `jetflow_e2e::output`, shared with the tests without a cluster).

pub use jetflow_e2e::output::{
    Collector, Message, count, messages, publish_js, source_sequences, wait_for_count,
};

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
