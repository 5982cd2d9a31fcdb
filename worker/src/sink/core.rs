//! The NATS Core sink: a plain publish per output, made delivered by a flush at each checkpoint.
//!
//! A Core publish has no acknowledgement of its own, so [`Sink::send`] returns
//! [`Confirmation::Done`] once the message is handed to the connection, and the split task's
//! snapshot flushes the connection (a PING answered by the server after everything before it)
//! before the checkpoint commits a position. That makes a JetStream source into Core at least
//! once: what a crash loses before the flush is published again from the last checkpoint.
//! Outputs keep their `Nats-Msg-Id` header, so a subscriber can drop the repeats.
//!
//! [`PipelineSink`] is the sink a runner holds: JetStream or Core, chosen by the pipeline's
//! spec; dispatching on it costs one match per output.

use super::jetstream::JetStreamSink;
use super::{Confirmation, OutputMessage, Sink, SinkError};

/// Publishes to NATS Core subjects.
#[derive(Clone, Debug)]
pub struct CoreSink {
    client: async_nats::Client,
}

impl CoreSink {
    /// A sink publishing over `client`.
    pub fn new(client: async_nats::Client) -> Self {
        Self { client }
    }
}

impl Sink for CoreSink {
    async fn send(&self, message: OutputMessage) -> Result<Confirmation, SinkError> {
        let OutputMessage {
            subject,
            headers,
            payload,
        } = message;
        self.client
            .publish_with_headers(subject.clone(), headers, payload)
            .await
            .map_err(|source| SinkError::CorePublish {
                subject: subject.to_string(),
                source,
            })?;
        Ok(Confirmation::Done)
    }

    async fn flush(&self) -> Result<(), SinkError> {
        self.client
            .flush()
            .await
            .map_err(|source| SinkError::Flush { source })
    }

    fn deduplicates(&self) -> bool {
        false
    }
}

/// The sink of a pipeline: JetStream (exactly once by message id) or NATS Core (at least once).
#[derive(Clone, Debug)]
pub enum PipelineSink {
    /// `spec.sink.jetstream`.
    JetStream(JetStreamSink),
    /// `spec.sink.core`.
    Core(CoreSink),
}

impl Sink for PipelineSink {
    async fn send(&self, message: OutputMessage) -> Result<Confirmation, SinkError> {
        match self {
            Self::JetStream(sink) => sink.send(message).await,
            Self::Core(sink) => sink.send(message).await,
        }
    }

    async fn flush(&self) -> Result<(), SinkError> {
        match self {
            Self::JetStream(sink) => sink.flush().await,
            Self::Core(sink) => sink.flush().await,
        }
    }

    fn deduplicates(&self) -> bool {
        match self {
            Self::JetStream(sink) => sink.deduplicates(),
            Self::Core(sink) => sink.deduplicates(),
        }
    }
}
