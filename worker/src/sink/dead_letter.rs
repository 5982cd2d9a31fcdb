//! Dead letters: where the error policy `Dlq` sends a message that failed in the steps, or whose
//! output the sink refused for good.
//!
//! The original message (subject, headers, payload untouched) goes to the dead-letter subject
//! with headers that say what failed: `Jetflow-Error-Step`, `Jetflow-Error-Kind`,
//! `Jetflow-Error`, and its source (`Jetflow-Source-Stream`, `-Subject`, `-Sequence`). When a
//! stream captures the dead-letter subject the publish is a JetStream publish with a message
//! id, confirmed by its ack like any output; otherwise it is a core publish confirmed by a round
//! trip on the same connection, like a Core sink's output (see [`super::core`]). Either way the failed message counts as processed only once its dead letter is
//! confirmed. The JetStream context lifts the client's limit of acks in flight, as the sink's
//! does: the split's window bounds them, and a split blocked on that limit could not poll the
//! acks that free it.

use async_nats::jetstream::{self, message::PublishMessage};
use async_nats::{HeaderMap, HeaderName, HeaderValue, Subject};

use super::core::CoreConnection;
use super::headers::output_headers;
use super::{Confirmation, SinkError};
use crate::source::SourceMessage;

/// What failed, for the dead letter's headers.
#[derive(Clone, Copy, Debug)]
pub struct Failure<'a> {
    /// The failing step's name (or `sink.subject` for the sink's subject template).
    pub step: &'a str,
    /// A stable kind (`parse`, `eval`, `template`, or a sink refusal's kind).
    pub kind: &'a str,
    /// The error text.
    pub message: &'a str,
}

/// Where dead letters go.
#[derive(Clone, Debug)]
pub struct DeadLetters {
    subject: Subject,
    target: Target,
}

#[derive(Clone, Debug)]
enum Target {
    JetStream(jetstream::Context),
    Core(CoreConnection),
}

fn single_line(text: &str) -> HeaderValue {
    // Header values must stay on one line.
    text.replace(['\r', '\n'], " ").as_str().into()
}

impl DeadLetters {
    /// Dead letters to `subject`, through JetStream when a stream captures the subject.
    pub async fn new(client: async_nats::Client, subject: &str) -> Self {
        // The acks of dead letters wait in the split's window like outputs: the same context
        // limits, or a split failing more messages than the default permits deadlocks.
        let js = super::jetstream::windowed_context(client.clone());
        let target = match js.stream_by_subject(subject).await {
            Ok(stream) => {
                tracing::info!(subject, stream, "dead letters go to a stream");
                Target::JetStream(js)
            }
            Err(_) => {
                tracing::info!(
                    subject,
                    "no stream captures the dead-letter subject; dead letters are core publishes"
                );
                Target::Core(CoreConnection::new(client))
            }
        };
        Self {
            subject: Subject::from(subject),
            target,
        }
    }

    /// The dead-letter subject.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// Sends the dead letter of `message`, read from `stream`.
    pub async fn send(
        &self,
        message: &SourceMessage,
        stream: &str,
        id: String,
        failure: Failure<'_>,
    ) -> Result<Confirmation, SinkError> {
        let mut headers: HeaderMap = output_headers(
            message.headers.as_ref(),
            id,
            stream,
            &message.subject,
            message.seq,
        );
        headers.insert(HeaderName::from_static("Jetflow-Error-Step"), failure.step);
        headers.insert(HeaderName::from_static("Jetflow-Error-Kind"), failure.kind);
        headers.insert(
            HeaderName::from_static("Jetflow-Error"),
            single_line(failure.message),
        );
        let payload = message.payload.clone();
        match &self.target {
            Target::JetStream(js) => {
                let publish = PublishMessage::build().payload(payload).headers(headers);
                js.send_publish(self.subject.clone(), publish)
                    .await
                    .map(Confirmation::Ack)
                    .map_err(|source| SinkError::Publish {
                        subject: self.subject.to_string(),
                        source,
                    })
            }
            Target::Core(connection) => {
                // The message id stays: harmless without a stream, and useful to a reader.
                let generation = connection.generation();
                connection
                    .client()
                    .publish_with_headers(self.subject.clone(), headers, payload)
                    .await
                    .map(|()| Confirmation::Sent { generation })
                    .map_err(|source| SinkError::CorePublish {
                        subject: self.subject.to_string(),
                        source,
                    })
            }
        }
    }

    /// Confirms core dead letters by a round trip (see [`crate::sink::Sink::round_trip`]).
    pub async fn round_trip(&self) -> Result<Option<u64>, SinkError> {
        match &self.target {
            Target::JetStream(_) => Ok(None),
            Target::Core(connection) => connection.round_trip().await.map(Some),
        }
    }
}
