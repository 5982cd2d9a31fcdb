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
        /// The stream that must have stored the message (`None`: any stream).
        stream: Option<String>,
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
            stream: None,
        }
    }

    /// As [`Confirmation::ack`], for a message that `stream` must store: an ack from another
    /// stream fails with [`StoredElsewhere`].
    pub fn ack_from(future: PublishAckFuture, stream: &str) -> Self {
        Self::Ack {
            future,
            deadline: tokio::time::Instant::now() + ACK_TIMEOUT,
            stream: Some(stream.to_owned()),
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
            Self::Ack {
                future,
                deadline,
                stream,
            } => match tokio::time::timeout_at(deadline, future).await {
                Ok(Ok(ack)) if stream.as_ref().is_some_and(|s| *s != ack.stream) => {
                    Err(PublishError::with_source(
                        PublishErrorKind::Other,
                        StoredElsewhere { stream: ack.stream },
                    ))
                }
                Ok(acked) => acked.map(|_ack| ()),
                Err(_elapsed) => Err(PublishError::new(PublishErrorKind::TimedOut)),
            },
        }
    }
}

/// The longest subject an output is published on, in bytes: nats-server's default
/// `max_control_line` (4,096 bytes) less room for the rest of the publish line (the verb, a
/// reply subject, the header and total sizes). A longer subject would make the server close the
/// connection every split of the worker shares; such an output is refused before publishing.
pub const MAX_SUBJECT_BYTES: usize = 3_840;

/// How much of a refused subject an error quotes.
const QUOTED_SUBJECT: usize = 200;

/// A subject as an error quotes it: at most [`QUOTED_SUBJECT`] bytes of it, with its length
/// when longer, control characters escaped.
pub fn quoted(subject: &str) -> String {
    if subject.len() <= QUOTED_SUBJECT {
        return format!("{subject:?}");
    }
    let mut end = QUOTED_SUBJECT;
    while !subject.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}… ({} bytes)", &subject[..end], subject.len())
}

/// Checks that `subject` can be published on: at most [`MAX_SUBJECT_BYTES`], not empty, no
/// empty token, no whitespace or control character, no wildcard token (`*`, `>`: a publish
/// on one is no wildcard but a literal only a wildcard subscription can tell from one). A
/// subject is a Rust string, so it is always valid UTF-8 (a template renders non-UTF-8 bytes
/// as a failure of its own). Returns what is wrong.
pub fn check_publish_subject(subject: &str) -> Result<(), String> {
    if subject.len() > MAX_SUBJECT_BYTES {
        return Err(format!(
            "{} bytes long, over the limit of {MAX_SUBJECT_BYTES} bytes (nats-server's max_control_line of 4096 less the rest of the publish line)",
            subject.len()
        ));
    }
    if subject.is_empty() {
        return Err("empty".to_owned());
    }
    if let Some(c) = subject
        .chars()
        .find(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!("contains the character {c:?}"));
    }
    for token in subject.split('.') {
        match token {
            "" => return Err("has an empty token".to_owned()),
            "*" | ">" => return Err(format!("has the wildcard token {token:?}")),
            _ => {}
        }
    }
    Ok(())
}

/// An ack from a stream other than the sink stream: the source of a [`PublishError`] whose
/// ack named that stream (see [`SinkError::WrongStream`]).
#[derive(Debug, thiserror::Error)]
#[error("stored in stream {stream}")]
pub struct StoredElsewhere {
    /// The stream that stored the output.
    pub stream: String,
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
    /// The output's subject cannot be published on (see [`check_publish_subject`]).
    #[error("the output subject {subject} cannot be published on: {reason}")]
    InvalidSubject {
        /// The subject, as [`quoted`].
        subject: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Another stream than the sink stream captures the output's subject: stored there
    /// (`stored`, the publish ack named it), or found so before publishing.
    #[error(
        "the output subject {subject} is captured by stream {stream}, not by the sink stream {sink}{}: set spec.sink.jetstream.subject to a subject only the sink stream captures (without it the output keeps the source subject, which the source stream captures)",
        if *stored { " (the output was stored there)" } else { " (not published)" }
    )]
    WrongStream {
        /// The subject.
        subject: String,
        /// The stream that captures it.
        stream: String,
        /// The sink stream.
        sink: String,
        /// Whether the other stream stored it (its ack said so) or it was not published.
        stored: bool,
    },
    /// No stream captures the output's subject.
    #[error(
        "no stream captures the output subject {subject}: the sink stream {sink} captures {captures:?}"
    )]
    NoStream {
        /// The subject.
        subject: String,
        /// The sink stream.
        sink: String,
        /// The sink stream's subjects.
        captures: Vec<String>,
    },
    /// One output of a fan-out is larger than the sink takes ([`SizeLimit`]): the message
    /// fails whole, before any of its outputs is published.
    #[error(
        "output {index} of the message is {size} bytes with its headers, over {} of {} bytes", limit.name, limit.bytes
    )]
    TooLarge {
        /// The output's index.
        index: usize,
        /// Its size with its headers.
        size: usize,
        /// The limit it is over.
        limit: SizeLimit,
    },
}

/// The largest message (headers and payload) a sink takes, and what refuses a larger one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SizeLimit {
    /// The limit in bytes.
    pub bytes: usize,
    /// The refusal a larger message meets.
    pub refusal: Refusal,
    /// What sets it, for errors (`the server's max_payload`).
    pub name: &'static str,
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
    /// Another stream than the sink stream captures the output's subject.
    WrongStream,
    /// No stream captures the output's subject.
    NoStream,
    /// The output's subject cannot be published on (too long, empty tokens, wildcards, control
    /// characters).
    InvalidSubject,
}

impl Refusal {
    /// A stable kind, for the dead letter's `Jetflow-Error-Kind` and the logs.
    pub fn kind(self) -> &'static str {
        match self {
            Self::MaxPayload => "max_payload",
            Self::MessageTooLarge => "message_too_large",
            Self::StreamFull => "stream_full",
            Self::WrongStream => "wrong_stream",
            Self::NoStream => "no_stream",
            Self::InvalidSubject => "invalid_subject",
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
            Self::CorePublish { source, .. } => match source.kind() {
                async_nats::client::PublishErrorKind::MaxPayloadExceeded => {
                    Some(Refusal::MaxPayload)
                }
                async_nats::client::PublishErrorKind::InvalidSubject => {
                    Some(Refusal::InvalidSubject)
                }
                _ => None,
            },
            Self::InvalidSubject { .. } => Some(Refusal::InvalidSubject),
            Self::WrongStream { .. } => Some(Refusal::WrongStream),
            Self::NoStream { .. } => Some(Refusal::NoStream),
            Self::TooLarge { limit, .. } => Some(limit.refusal),
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
            Self::InvalidSubject { .. } => "invalid_subject",
            Self::WrongStream { .. } => "wrong_stream",
            Self::NoStream { .. } => "no_stream",
            Self::TooLarge { .. } => "too_large",
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

    /// Checks, before anything is published, that the sink can take an output on `subject` (a
    /// JetStream sink: that its stream captures the subject); an error is a refusal (see
    /// [`SinkError::refusal`]).
    fn admit(&self, _subject: &str) -> impl Future<Output = Result<(), SinkError>> + Send {
        async { Ok(()) }
    }

    /// The error of an output on `subject` whose confirmation failed with `source`: a refusal
    /// where the failure says the sink can never take it (a JetStream sink: another stream
    /// stored it, or no stream captures its subject).
    fn unconfirmed(
        &self,
        subject: &str,
        source: PublishError,
    ) -> impl Future<Output = SinkError> + Send {
        let subject = quoted(subject);
        async move { SinkError::Confirm { subject, source } }
    }

    /// The largest message (headers and payload) the sink takes, when it knows it.
    fn size_limit(&self) -> Option<SizeLimit> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_subjects_are_checked_for_length_tokens_wildcards_and_control_characters() {
        assert!(check_publish_subject("out.eu.x").is_ok());
        // A wildcard character inside a token is a literal.
        assert!(check_publish_subject("out.a*b.c>").is_ok());
        let long = format!("out.{}", "x".repeat(MAX_SUBJECT_BYTES));
        let why = check_publish_subject(&long).expect_err("too long");
        assert!(why.contains("3840"), "{why}");
        for (subject, why) in [
            ("", "empty"),
            ("out..x", "empty token"),
            ("out.x.", "empty token"),
            (".out", "empty token"),
            ("out.*", "wildcard"),
            ("out.>", "wildcard"),
            ("out.a b", "' '"),
            ("out.a\tb", "'\\t'"),
            ("out.a\u{0}b", "'\\0'"),
            ("out.a\u{1}b", "'\\u{1}'"),
            ("out.a\u{85}b", "'\\u{85}'"),
        ] {
            let error = check_publish_subject(subject).expect_err(subject);
            assert!(error.contains(why), "{subject:?}: {error}");
        }
    }

    #[test]
    fn a_long_subject_is_quoted_shortened_with_its_length() {
        let long = format!("out.{}", "é".repeat(3_000));
        let text = quoted(&long);
        assert!(text.len() < 300, "{text}");
        assert!(text.ends_with("… (6004 bytes)"), "{text}");
        assert_eq!(quoted("a.b"), "\"a.b\"");
    }
}
