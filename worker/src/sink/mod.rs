//! Sinks: where outputs go, and how their delivery is confirmed.
//!
//! [`Sink::send`] hands one output to the connection and returns a [`Confirmation`] that
//! resolves when the server has confirmed it (a JetStream publish ack), or that a round trip on
//! the same connection confirms ([`Sink::round_trip`], what a Core NATS sink relies on). The
//! split task keeps a bounded window of unconfirmed outputs and counts a source message as
//! processed only when every output before and including it is confirmed; only then can a
//! checkpoint cover it. One file per connector; [`headers`] builds what every output carries.

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
    /// Nothing more to wait for.
    Done,
    /// A JetStream publish ack.
    Ack(PublishAckFuture),
    /// Handed to a Core connection at `generation`: delivered once a round trip completes on
    /// that same generation ([`Sink::round_trip`]); published again otherwise.
    Sent {
        /// The connection's generation read before the publish.
        generation: u64,
    },
}

impl Confirmation {
    /// Waits for the confirmation. A duplicate (the stream already held this message id) is a
    /// success: it is what makes replays exactly once.
    pub async fn wait(self) -> Result<(), PublishError> {
        match self {
            Self::Done | Self::Sent { .. } => Ok(()),
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
    /// The round trip that confirms Core publishes failed.
    #[error("Core publishes not confirmed: no round trip to the server: {source}")]
    RoundTrip {
        /// The client's error.
        source: async_nats::RequestError,
    },
    /// The connection was replaced (a reconnect) while Core publishes awaited confirmation:
    /// what the old connection had not delivered is lost, so they are published again.
    #[error("Core publishes not confirmed: the connection to NATS was replaced meanwhile")]
    Reconnected,
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
            Self::RoundTrip { .. } | Self::Reconnected => "round_trip",
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

    /// Confirms everything sent so far with [`Confirmation::Sent`]: a round trip to the server
    /// on the same connection. Returns the connection generation it completed on (the sends of
    /// that generation are delivered; the others must be sent again), or `None` for a sink
    /// whose sends confirm themselves.
    fn round_trip(&self) -> impl Future<Output = Result<Option<u64>, SinkError>> + Send;

    /// Whether the sink deduplicates by message id (exactly once on replay).
    fn deduplicates(&self) -> bool;
}
