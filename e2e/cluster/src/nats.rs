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
