//! The JetStream sink: publishes with a message id and returns the publish ack to wait for.
//!
//! Publishes are pipelined: `send` only hands the message to the connection, and the ack is
//! awaited later, in order, by the split task's bounded window. A duplicate ack (the stream
//! already held the id) counts as confirmed. The ack names the stream that stored the output;
//! no `Nats-Expected-Stream` header is sent with each message, since it costs the server a
//! header per message, and the operator checks that the sink stream captures the subjects.

use async_nats::jetstream::{self, message::PublishMessage};

use super::{Confirmation, OutputMessage, Sink, SinkError};

/// Far above any sum of split windows (`maxPending` is at most 100,000 per split).
const CONTEXT_ACK_LIMIT: usize = 1 << 24;

/// A JetStream context for publishes whose acks a split's window awaits (outputs and dead
/// letters): its own limit of acks in flight is lifted far above the sum of the windows, which
/// bound them. With the client's default limit (5,000), a split whose window holds more than
/// that blocks in `send_publish` and can never poll the acks that would free a permit.
pub(crate) fn windowed_context(client: async_nats::Client) -> jetstream::Context {
    jetstream::ContextBuilder::new()
        .max_ack_inflight(CONTEXT_ACK_LIMIT)
        .build(client)
}

/// Publishes to a JetStream stream.
#[derive(Clone, Debug)]
pub struct JetStreamSink {
    js: jetstream::Context,
    stream: String,
}

impl JetStreamSink {
    /// A sink into `stream` over `client`. The split tasks' windows bound the unconfirmed
    /// publishes; the context's own limit is lifted far above their sum, because a split
    /// blocked on it could not poll the acks that would free it (a deadlock across splits).
    pub fn new(client: async_nats::Client, stream: &str) -> Self {
        Self {
            js: windowed_context(client),
            stream: stream.to_owned(),
        }
    }

    /// The stream written to.
    pub fn stream(&self) -> &str {
        &self.stream
    }
}

impl Sink for JetStreamSink {
    async fn send(&self, message: OutputMessage) -> Result<Confirmation, SinkError> {
        let OutputMessage {
            subject,
            headers,
            payload,
        } = message;
        let publish = PublishMessage::build().payload(payload).headers(headers);
        match self.js.send_publish(subject.clone(), publish).await {
            Ok(ack) => Ok(Confirmation::ack(ack)),
            Err(source) => Err(SinkError::Publish {
                subject: subject.to_string(),
                source,
            }),
        }
    }

    async fn round_trip(&self) -> Result<Option<u64>, SinkError> {
        // Every publish is confirmed by its own ack.
        Ok(None)
    }

    fn deduplicates(&self) -> bool {
        true
    }
}
