//! Dead letters: where the error policy `Dlq` sends a message that failed in the steps, or whose
//! output the sink refused for good.
//!
//! The original message (subject, headers, payload untouched) goes to the dead-letter subject
//! with headers that say what failed: `Jetflow-Error-Step`, `Jetflow-Error-Kind`,
//! `Jetflow-Error`, and its source (`Jetflow-Source`: `<stream>/<sequence>/<subject>`). The
//! publish is always a JetStream publish with a message id, confirmed by its ack like any
//! output, and the failed message counts as processed only once its dead letter is confirmed.
//! A dead letter is never a core publish: with no stream capturing the subject nobody would
//! keep it. So a dead letter that no stream takes (JetStream answers "no stream") fails like an
//! output that cannot be delivered ([`SinkError::NoDeadLetterStream`]): the split keeps its
//! position before the message, and the worker stops with an error that names the subject,
//! until a stream captures it (the operator creates one for a Pipeline). The JetStream context
//! lifts the client's limit of acks in flight, as the sink's does: the split's window bounds
//! them, and a split blocked on that limit could not poll the acks that free it.

use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::{self, message::PublishMessage};
use async_nats::{HeaderMap, HeaderName, HeaderValue, Subject};
use jetflow_nats::source_header::Prefix;

use super::headers::output_headers;
use super::{Confirmation, SinkError};
use crate::source::SourceMessage;

/// What failed, for the dead letter's headers.
#[derive(Clone, Copy, Debug)]
pub struct Failure<'a> {
    /// The failing step's name (or `sink.subject` for the sink's subject template).
    pub step: &'a str,
    /// A stable kind (`parse`, `eval`, `timeout`, `template`, or a sink refusal's kind).
    pub kind: &'a str,
    /// The error text.
    pub message: &'a str,
}

/// Where dead letters go.
#[derive(Clone, Debug)]
pub struct DeadLetters {
    subject: Subject,
    js: jetstream::Context,
}

fn single_line(text: &str) -> HeaderValue {
    // Header values must stay on one line.
    text.replace(['\r', '\n'], " ").as_str().into()
}

impl DeadLetters {
    /// Dead letters to `subject`, through JetStream. A missing stream is only logged here: it
    /// may be created before the first message fails (the operator creates one), and a
    /// pipeline whose messages never fail needs none.
    pub async fn new(client: async_nats::Client, subject: &str) -> Self {
        // The acks of dead letters wait in the split's window like outputs: the same context
        // limits, or a split failing more messages than the default permits deadlocks.
        let js = super::jetstream::windowed_context(client);
        match js.stream_by_subject(subject).await {
            Ok(stream) => tracing::info!(subject, stream, "dead letters go to a stream"),
            Err(e) => tracing::warn!(
                subject,
                error = %e,
                "no stream captures the dead-letter subject (yet): a message that fails under errors.policy Dlq stops the split until one does"
            ),
        }
        Self {
            subject: Subject::from(subject),
            js,
        }
    }

    /// The dead-letter subject.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// Sends the dead letter of `message`, read from the source of `source`.
    pub async fn send(
        &self,
        message: &SourceMessage,
        source: &Prefix,
        id: String,
        failure: Failure<'_>,
    ) -> Result<Confirmation, SinkError> {
        let mut headers: HeaderMap = output_headers(
            message.headers.as_ref(),
            id,
            source,
            &message.subject,
            message.seq,
        );
        headers.insert(
            const { HeaderName::from_static("Jetflow-Error-Step") },
            failure.step,
        );
        headers.insert(
            const { HeaderName::from_static("Jetflow-Error-Kind") },
            failure.kind,
        );
        headers.insert(
            const { HeaderName::from_static("Jetflow-Error") },
            single_line(failure.message),
        );
        let publish = PublishMessage::build()
            .payload(message.payload.clone())
            .headers(headers);
        self.js
            .send_publish(self.subject.clone(), publish)
            .await
            .map(Confirmation::ack)
            .map_err(|source| self.publish_error(source))
    }

    /// The error of a dead letter that was not sent or not confirmed: "no stream" is named as
    /// such.
    pub fn publish_error(&self, source: PublishError) -> SinkError {
        if source.kind() == PublishErrorKind::StreamNotFound {
            SinkError::NoDeadLetterStream {
                subject: self.subject.to_string(),
            }
        } else {
            SinkError::Publish {
                subject: self.subject.to_string(),
                source,
            }
        }
    }
}
