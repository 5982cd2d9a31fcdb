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

use async_nats::jetstream::context::{PublishAckFuture, PublishError, PublishErrorKind};
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
    /// A JetStream publish ack, awaited until `deadline` ([`Confirmation::ack`]).
    Ack {
        /// The client's ack.
        future: PublishAckFuture,
        /// When the ack counts as lost.
        deadline: tokio::time::Instant,
    },
    /// A JetStream publish whose ack comes to the split's reply inbox under `token`
    /// ([`jetstream::Replies`]), awaited until `deadline`.
    Reply {
        /// The token of the ack.
        token: u64,
        /// When the ack counts as lost.
        deadline: tokio::time::Instant,
    },
    /// Handed to a Core connection at `generation`: delivered once a round trip completes on
    /// that same generation ([`Sink::round_trip`]); published again otherwise.
    Sent {
        /// The connection's generation read before the publish.
        generation: u64,
    },
}

/// How long a JetStream publish ack may take, counted from the publish.
pub const ACK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl Confirmation {
    /// The confirmation of a JetStream publish sent now: lost if it has not come within
    /// [`ACK_TIMEOUT`] of now. (The client's own time limit starts only when the ack is first
    /// awaited, and the split awaits its window in order: after a dropped connection, whose acks
    /// never come, every output in flight would wait its full limit one after the other.)
    pub fn ack(future: PublishAckFuture) -> Self {
        Self::Ack {
            future,
            deadline: tokio::time::Instant::now() + ACK_TIMEOUT,
        }
    }

    /// Waits for the confirmation. A duplicate (the stream already held this message id) is a
    /// success: it is what makes replays exactly once.
    ///
    /// A [`Confirmation::Reply`] arrives on the split's reply inbox instead, which the split
    /// task reads; waiting for it here is an error.
    pub async fn wait(self) -> Result<(), PublishError> {
        match self {
            Self::Done | Self::Sent { .. } => Ok(()),
            Self::Reply { .. } => Err(PublishError::new(PublishErrorKind::Other)),
            Self::Ack { future, deadline } => match tokio::time::timeout_at(deadline, future).await
            {
                Ok(acked) => acked.map(|_ack| ()),
                Err(_elapsed) => Err(PublishError::new(PublishErrorKind::TimedOut)),
            },
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
    /// No stream captures the dead-letter subject: JetStream answered "no stream" (a dead
    /// letter is never published where nobody keeps it).
    #[error(
        "no stream captures the dead-letter subject {subject}: failed messages are never published where nobody keeps them; create a stream on {subject} (the operator creates one for a Pipeline), or set spec.errors.deadLetterSubject to a subject a stream captures"
    )]
    NoDeadLetterStream {
        /// The dead-letter subject.
        subject: String,
    },
    /// The connection was replaced (a reconnect) while Core publishes awaited confirmation:
    /// what the old connection had not delivered is lost, so they are published again.
    #[error("Core publishes not confirmed: the connection to NATS was replaced meanwhile")]
    Reconnected,
    /// The output subject could not be rendered.
    #[error(transparent)]
    Template(#[from] TemplateError),
}

/// Why the sink refused a message for good: publishing it again can never succeed, so it goes
/// to the pipeline's error policy instead of being retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Payload and headers exceed the server's `max_payload`.
    MaxPayload,
    /// The sink stream's `maxMsgSize` (or its header limit) is below the message's size.
    MessageTooLarge,
    /// The sink stream is full (`maxMsgs`, `maxBytes` or per-subject limit) and its discard
    /// policy is `New`.
    StreamFull,
}

impl Refusal {
    /// A stable kind, for the dead letter's `Jetflow-Error-Kind` and the logs.
    pub fn kind(self) -> &'static str {
        match self {
            Self::MaxPayload => "max_payload",
            Self::MessageTooLarge => "message_too_large",
            Self::StreamFull => "stream_full",
        }
    }
}

fn jetstream_refusal(source: &PublishError) -> Option<Refusal> {
    use async_nats::jetstream::context::PublishErrorKind;
    use async_nats::jetstream::{Error as ApiError, ErrorCode};
    match source.kind() {
        PublishErrorKind::MaxPayloadExceeded => Some(Refusal::MaxPayload),
        PublishErrorKind::Other => {
            let api = std::error::Error::source(source)?.downcast_ref::<ApiError>()?;
            match api.error_code() {
                ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM
                | ErrorCode::STREAM_HEADER_EXCEEDS_MAXIMUM => Some(Refusal::MessageTooLarge),
                // A store failure is also how a disk error comes back: only the limits of a
                // stream that discards new messages are a refusal.
                ErrorCode::STREAM_STORE_FAILED => {
                    let text = api.to_string();
                    (text.starts_with("maximum ") && text.contains(" exceeded"))
                        .then_some(Refusal::StreamFull)
                }
                _ => None,
            }
        }
        // Timeouts, a broken connection, no responders (the stream may be back): transient.
        _ => None,
    }
}

impl SinkError {
    /// The refusal, when the sink will never take this message; `None` for an error worth
    /// retrying.
    pub fn refusal(&self) -> Option<Refusal> {
        match self {
            Self::Publish { source, .. } | Self::Confirm { source, .. } => {
                jetstream_refusal(source)
            }
            Self::CorePublish { source, .. } => (source.kind()
                == async_nats::client::PublishErrorKind::MaxPayloadExceeded)
                .then_some(Refusal::MaxPayload),
            _ => None,
        }
    }

    /// A stable category for metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Publish { .. } | Self::CorePublish { .. } => "publish",
            Self::Confirm { .. } => "publish_ack",
            Self::NoDeadLetterStream { .. } => "dead_letter_no_stream",
            Self::RoundTrip { .. } | Self::Reconnected => "round_trip",
            Self::Template(_) => "template",
        }
    }
}

/// A destination for outputs.
pub trait Sink: Send + Sync + 'static {
    /// A reply inbox for one split's publish acks, where the sink's sends confirm that way
    /// (a JetStream sink); `None` otherwise.
    fn replies(&self) -> impl Future<Output = Option<jetstream::Replies>> + Send {
        async { None }
    }

    /// Sends one output; the returned confirmation resolves when the server confirmed it. With
    /// `replies` (from [`Sink::replies`]) a JetStream publish asks for its ack there.
    fn send(
        &self,
        message: OutputMessage,
        replies: Option<&jetstream::ReplyTo>,
    ) -> impl Future<Output = Result<Confirmation, SinkError>> + Send;

    /// Confirms everything sent so far with [`Confirmation::Sent`]: a round trip to the server
    /// on the same connection. Returns the connection generation it completed on (the sends of
    /// that generation are delivered; the others must be sent again), or `None` for a sink
    /// whose sends confirm themselves.
    fn round_trip(&self) -> impl Future<Output = Result<Option<u64>, SinkError>> + Send;

    /// Whether the sink deduplicates by message id (exactly once on replay).
    fn deduplicates(&self) -> bool;
}
