//! Sinks: where outputs go, and how their delivery is confirmed.
//!
//! [`Sink::send`] hands one output to the connection and returns a [`Confirmation`] that
//! resolves when the server has confirmed it (a JetStream publish ack); [`Sink::flush`] makes
//! everything sent so far delivered (what a Core NATS sink relies on at a checkpoint). The split
//! task keeps a bounded window of unconfirmed outputs and counts a source message as processed
//! only when every output before and including it is confirmed; only then can a checkpoint
//! cover it. One file per connector; [`headers`] builds what every output carries.

pub mod core;
pub mod dead_letter;
pub mod headers;
pub mod jetstream;

use std::future::Future;

use async_nats::jetstream::context::{PublishAckFuture, PublishError};
use async_nats::{HeaderMap, Subject};
use bytes::Bytes;

// One template implementation for the setSubject step and the sink.
pub use jetflow_steps::template::{SubjectTemplate, TemplateError};

/// One message for a sink.
#[derive(Clone, Debug)]
pub struct OutputMessage {
    /// The subject to publish on.
    pub subject: Subject,
    /// Headers, including the message id.
    pub headers: HeaderMap,
    /// The payload.
    pub payload: Bytes,
}

/// The pending confirmation of one sent output.
#[derive(Debug)]
pub enum Confirmation {
    /// Nothing more to wait for (or covered by the next [`Sink::flush`]).
    Done,
    /// A JetStream publish ack.
    Ack(PublishAckFuture),
}

impl Confirmation {
    /// Waits for the confirmation. A duplicate (the stream already held this message id) is a
    /// success: it is what makes replays exactly once.
    pub async fn wait(self) -> Result<(), PublishError> {
        match self {
            Self::Done => Ok(()),
            Self::Ack(future) => future.await.map(|_ack| ()),
        }
    }
}

/// Why an output could not be sent or confirmed.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The publish could not be sent.
    #[error("cannot publish to {subject}: {source}")]
    Publish {
        /// The subject.
        subject: String,
        /// The client's error.
        source: PublishError,
    },
    /// The publish was not confirmed.
    #[error("publish to {subject} not confirmed: {source}")]
    Confirm {
        /// The subject.
        subject: String,
        /// The client's error.
        source: PublishError,
    },
    /// A core publish failed.
    #[error("cannot publish to {subject}: {source}")]
    CorePublish {
        /// The subject.
        subject: String,
        /// The client's error.
        source: async_nats::PublishError,
    },
    /// Flushing the connection failed.
    #[error("cannot flush the connection: {source}")]
    Flush {
        /// The client's error.
        source: async_nats::client::FlushError,
    },
    /// No stream captures the dead-letter subject: JetStream answered "no stream" (a dead
    /// letter is never published where nobody keeps it).
    #[error(
        "no stream captures the dead-letter subject {subject}: failed messages are never published where nobody keeps them; create a stream on {subject} (the operator creates one for a Pipeline), or set spec.errors.deadLetterSubject to a subject a stream captures"
    )]
    NoDeadLetterStream {
        /// The dead-letter subject.
        subject: String,
    },
    /// The output subject could not be rendered.
    #[error(transparent)]
    Template(#[from] TemplateError),
}

impl SinkError {
    /// A stable category for metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Publish { .. } | Self::CorePublish { .. } => "publish",
            Self::Confirm { .. } => "publish_ack",
            Self::Flush { .. } => "flush",
            Self::NoDeadLetterStream { .. } => "dead_letter_no_stream",
            Self::Template(_) => "template",
        }
    }
}

/// A destination for outputs.
pub trait Sink: Send + Sync + 'static {
    /// Sends one output; the returned confirmation resolves when the server confirmed it.
    fn send(
        &self,
        message: OutputMessage,
    ) -> impl Future<Output = Result<Confirmation, SinkError>> + Send;

    /// Makes everything sent so far delivered.
    fn flush(&self) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Whether the sink deduplicates by message id (exactly once on replay).
    fn deduplicates(&self) -> bool;
}
