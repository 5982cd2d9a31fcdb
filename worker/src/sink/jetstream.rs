//! The JetStream sink: publishes with a message id and returns the publish ack to wait for.
//!
//! Publishes are pipelined: `send` only hands the message to the connection, and the ack is
//! awaited later, in order, by the split task's bounded window. A duplicate ack (the stream
//! already held the id) counts as confirmed.
//!
//! Each split has its own reply inbox ([`Replies`]): one subscription on `<inbox>.*`, and every
//! output asks for its ack at `<inbox>.<token>`, tokens counting up. The split task reads its
//! acks straight from that subscription and matches them to its window by token, so an output
//! costs no per-publish channel, inbox name or response routing in the client, and a successful
//! ack is recognised without decoding it (only an error is parsed). Without a reply inbox (its
//! subscription failed) a publish goes through the client's JetStream context as a request.
//!
//! Routing is checked twice, without a `Nats-Expected-Stream` header per message (which costs
//! the server a header per message). Before publishing, an output's subject must be one the
//! sink stream captures (its subjects, read when the sink starts and again whenever an ack says
//! they changed); one it does not capture is refused unpublished, as `wrong_stream` (naming the
//! stream that does capture it) or `no_stream` ([`Sink::admit`]). After publishing, the ack
//! names the stream that stored the output: an ack from any other stream is a `wrong_stream`
//! refusal, and "no responders" for a subject the sink stream no longer captures a `no_stream`
//! one ([`Sink::unconfirmed`]). Both go to the pipeline's error policy; an output stored in
//! another stream cannot be unstored, but it is never published again, and while the sink
//! stream's subjects are unknown (it could not be read) its subject is refused unpublished
//! from then on: an output written back into the source stream, read again, is not written
//! back again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use async_nats::jetstream::context::{GetStreamByNameErrorKind, PublishError, PublishErrorKind};
use async_nats::jetstream::{self, message::PublishMessage};
use async_nats::{Message, StatusCode, Subject, Subscriber};

use super::{
    ACK_TIMEOUT, Confirmation, OutputMessage, Refusal, Sink, SinkError, SizeLimit, StoredElsewhere,
    quoted,
};

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
    client: async_nats::Client,
    js: jetstream::Context,
    stream: String,
    /// The sink stream's subjects as last read (`None`: not read yet, or it could not be).
    captures: Arc<RwLock<Option<Arc<[String]>>>>,
    /// Subjects an ack said another stream stored, with that stream: refused unpublished from
    /// then on while the sink stream's subjects are unknown (an output written back into the
    /// source stream is read again with the same subject, and must not be written back again).
    elsewhere: Arc<Elsewhere>,
    /// The sink stream's `maxMsgSize` as last read (0: none, or not read).
    max_msg_size: Arc<std::sync::atomic::AtomicUsize>,
}

/// At most this many subjects are remembered as stored elsewhere.
const ELSEWHERE_SUBJECTS: usize = 4096;

/// Subjects another stream stored (see [`JetStreamSink`]).
#[derive(Debug, Default)]
struct Elsewhere {
    any: std::sync::atomic::AtomicBool,
    subjects: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

impl Elsewhere {
    fn insert(&self, subject: &str, stream: &str) {
        let mut subjects = self.subjects.lock().expect("not poisoned");
        if subjects.len() < ELSEWHERE_SUBJECTS {
            subjects.insert(subject.to_owned(), stream.to_owned());
            self.any.store(true, Ordering::Release);
        }
    }

    fn get(&self, subject: &str) -> Option<String> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        self.subjects
            .lock()
            .expect("not poisoned")
            .get(subject)
            .cloned()
    }
}

impl JetStreamSink {
    /// A sink into `stream` over `client`. The split tasks' windows bound the unconfirmed
    /// publishes; the context's own limit is lifted far above their sum, because a split
    /// blocked on it could not poll the acks that would free it (a deadlock across splits).
    pub fn new(client: async_nats::Client, stream: &str) -> Self {
        Self {
            js: windowed_context(client.clone()),
            client,
            stream: stream.to_owned(),
            captures: Arc::default(),
            elsewhere: Arc::default(),
            max_msg_size: Arc::default(),
        }
    }

    /// The stream written to.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// Reads the sink stream's subjects again (kept as they were when it cannot be read now).
    pub async fn refresh(&self) {
        match self.js.get_stream(&self.stream).await {
            Ok(found) => {
                let config = &found.cached_info().config;
                let subjects: Arc<[String]> = config.subjects.clone().into();
                *self.captures.write().expect("not poisoned") = Some(subjects);
                let max_msg_size = usize::try_from(config.max_message_size).unwrap_or(0);
                self.max_msg_size.store(max_msg_size, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::debug!(stream = %self.stream, error = %e, "cannot read the sink stream's subjects");
            }
        }
    }

    /// Whether the sink stream captures `subject`, as its subjects were last read (`Err` with
    /// them when it does not; `None`: unknown, or a stream without subjects of its own).
    fn captures(&self, subject: &str) -> Option<Result<(), Arc<[String]>>> {
        let captures = self.captures.read().expect("not poisoned");
        let captures = captures.as_ref().filter(|c| !c.is_empty())?;
        let captured = captures
            .iter()
            .any(|filter| jetflow_crds::validate::subjects_overlap(filter, subject));
        Some(if captured {
            Ok(())
        } else {
            Err(captures.clone())
        })
    }
}

/// Where a split's publishes ask for their acks: `<inbox>.<token>`.
#[derive(Debug)]
pub struct ReplyTo {
    /// `<inbox>.`
    prefix: String,
    next: AtomicU64,
}

impl ReplyTo {
    /// The next token and the reply subject that carries it.
    fn next(&self) -> (u64, Subject) {
        let token = self.next.fetch_add(1, Ordering::Relaxed);
        let mut subject = String::with_capacity(self.prefix.len() + 20);
        subject.push_str(&self.prefix);
        subject.push_str(itoa::Buffer::new().format(token));
        (token, Subject::from(subject))
    }

    /// The token a reply subject carries, if it is one of these.
    fn token_of(&self, subject: &str) -> Option<u64> {
        subject.strip_prefix(self.prefix.as_str())?.parse().ok()
    }
}

/// A split's reply inbox: where its publishes ask for acks, and the subscription they arrive on.
#[derive(Debug)]
pub struct Replies {
    /// The reply subjects.
    pub to: ReplyTo,
    /// The acks, in the order the server sent them.
    pub acks: Subscriber,
    /// The stream the acks must come from.
    stored: Stored,
}

impl Replies {
    /// The token an ack answers, and what it says: confirmed (also as a duplicate), or the
    /// error the server gave. `None` for a message that is no ack of this inbox.
    pub fn outcome(&self, ack: &Message) -> Option<(u64, Result<(), PublishError>)> {
        Some((self.to.token_of(&ack.subject)?, outcome(ack, &self.stored)))
    }
}

/// The sink stream, as a successful ack from it begins: `{"stream":"<name>"`.
#[derive(Debug)]
struct Stored {
    name: String,
    prefix: Vec<u8>,
}

impl Stored {
    fn new(stream: &str) -> Self {
        Self {
            name: stream.to_owned(),
            prefix: format!("{{\"stream\":\"{stream}\"").into_bytes(),
        }
    }
}

/// What a publish ack says. A successful ack from the sink stream (`{"stream":…,"seq":…}`,
/// perhaps with `"duplicate":true`) is recognised without decoding it; an error, or an ack
/// from another stream, is decoded (the error's code decides whether the sink refuses the
/// message for good; another stream is a refusal).
fn outcome(ack: &Message, stored: &Stored) -> Result<(), PublishError> {
    if ack.status == Some(StatusCode::NO_RESPONDERS) {
        return Err(PublishError::new(PublishErrorKind::StreamNotFound));
    }
    let payload = ack.payload.as_ref();
    let error = payload.windows(7).any(|w| w == b"\"error\"");
    if !error && payload.starts_with(&stored.prefix) {
        return Ok(());
    }
    if error {
        #[derive(serde::Deserialize)]
        struct Refused {
            error: jetstream::Error,
        }
        if let Ok(Refused { error }) = serde_json::from_slice::<Refused>(payload) {
            return Err(PublishError::with_source(PublishErrorKind::Other, error));
        }
        // `"error"` elsewhere (a stream named so): an ack like any other.
    }
    #[derive(serde::Deserialize)]
    struct Ack {
        stream: String,
    }
    match serde_json::from_slice::<Ack>(payload) {
        Ok(Ack { stream }) if stream == stored.name => Ok(()),
        Ok(Ack { stream }) => Err(PublishError::with_source(
            PublishErrorKind::Other,
            StoredElsewhere { stream },
        )),
        Err(_) => Err(PublishError::new(PublishErrorKind::Other)),
    }
}

impl Sink for JetStreamSink {
    async fn replies(&self) -> Option<Replies> {
        let inbox = self.client.new_inbox();
        match self.client.subscribe(format!("{inbox}.*")).await {
            Ok(acks) => Some(Replies {
                to: ReplyTo {
                    prefix: format!("{inbox}."),
                    next: AtomicU64::new(0),
                },
                acks,
                stored: Stored::new(&self.stream),
            }),
            Err(e) => {
                tracing::warn!(error = %e, "cannot subscribe to a reply inbox for publish acks; publishing as requests");
                None
            }
        }
    }

    async fn send(
        &self,
        message: OutputMessage,
        replies: Option<&ReplyTo>,
    ) -> Result<Confirmation, SinkError> {
        let OutputMessage {
            subject,
            headers,
            payload,
        } = message;
        if let Some(replies) = replies {
            let (token, reply) = replies.next();
            let deadline = tokio::time::Instant::now() + ACK_TIMEOUT;
            return match self
                .client
                .publish_with_reply_and_headers(subject.clone(), reply, headers, payload)
                .await
            {
                Ok(()) => Ok(Confirmation::Reply { token, deadline }),
                Err(source) => Err(SinkError::CorePublish {
                    subject: subject.to_string(),
                    source,
                }),
            };
        }
        let publish = PublishMessage::build().payload(payload).headers(headers);
        match self.js.send_publish(subject.clone(), publish).await {
            Ok(ack) => Ok(Confirmation::ack_from(ack, &self.stream)),
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

    async fn admit(&self, subject: &str) -> Result<(), SinkError> {
        let captures = match self.captures(subject) {
            Some(Ok(())) => return Ok(()),
            Some(Err(captures)) => captures,
            None => {
                // The sink stream's subjects are unknown: only what an ack told is known.
                return match self.elsewhere.get(subject) {
                    Some(stream) => Err(SinkError::WrongStream {
                        subject: quoted(subject),
                        stream,
                        sink: self.stream.clone(),
                        stored: false,
                    }),
                    None => Ok(()),
                };
            }
        };
        // Not the sink stream's: name the stream that captures it, if any. An answer that
        // says neither leaves it to the publish and its ack.
        match self.js.stream_by_subject(subject).await {
            Ok(stream) if stream != self.stream => Err(SinkError::WrongStream {
                subject: quoted(subject),
                stream,
                sink: self.stream.clone(),
                stored: false,
            }),
            Ok(_) => {
                // The sink stream captures it now: its subjects changed.
                self.refresh().await;
                Ok(())
            }
            Err(e) if e.kind() == GetStreamByNameErrorKind::NotFound => Err(SinkError::NoStream {
                subject: quoted(subject),
                sink: self.stream.clone(),
                captures: captures.to_vec(),
            }),
            Err(_) => Ok(()),
        }
    }

    async fn unconfirmed(&self, subject: &str, source: PublishError) -> SinkError {
        let elsewhere = std::error::Error::source(&source)
            .and_then(|e| e.downcast_ref::<StoredElsewhere>())
            .map(|e| e.stream.clone());
        if let Some(stream) = elsewhere {
            // The sink stream's subjects may have changed: the next outputs are checked against
            // them before they are published (and against this subject while they are unknown).
            self.elsewhere.insert(subject, &stream);
            self.refresh().await;
            return SinkError::WrongStream {
                subject: quoted(subject),
                stream,
                sink: self.stream.clone(),
                stored: true,
            };
        }
        if source.kind() == PublishErrorKind::StreamNotFound {
            // No responders: a refusal when the sink stream (read again now) does not capture
            // the subject; otherwise JetStream may be starting, and the publish is tried again.
            self.refresh().await;
            if let Some(Err(captures)) = self.captures(subject) {
                return SinkError::NoStream {
                    subject: quoted(subject),
                    sink: self.stream.clone(),
                    captures: captures.to_vec(),
                };
            }
        }
        SinkError::Confirm {
            subject: quoted(subject),
            source,
        }
    }

    fn size_limit(&self) -> Option<SizeLimit> {
        let server = SizeLimit {
            bytes: self.client.max_payload(),
            refusal: Refusal::MaxPayload,
            name: "the server's max_payload",
        };
        // The stream counts headers and payload against its maxMsgSize as the server does.
        let stream = self.max_msg_size.load(Ordering::Relaxed);
        Some(if stream > 0 && stream < server.bytes {
            SizeLimit {
                bytes: stream,
                refusal: Refusal::MessageTooLarge,
                name: "the sink stream's maxMsgSize",
            }
        } else {
            server
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(payload: &str, status: Option<StatusCode>) -> Message {
        Message {
            subject: Subject::from("_INBOX.abc.41"),
            reply: None,
            payload: bytes::Bytes::copy_from_slice(payload.as_bytes()),
            headers: None,
            status,
            description: None,
            length: payload.len(),
        }
    }

    fn replies() -> (ReplyTo, String) {
        let to = ReplyTo {
            prefix: "_INBOX.abc.".to_owned(),
            next: AtomicU64::new(41),
        };
        (to, "_INBOX.abc.41".to_owned())
    }

    #[test]
    fn reply_subjects_carry_tokens_counting_up() {
        let (to, first) = replies();
        assert_eq!(to.next(), (41, Subject::from(first)));
        assert_eq!(to.next(), (42, Subject::from("_INBOX.abc.42")));
    }

    fn outcome(ack: &Message) -> Result<(), PublishError> {
        super::outcome(ack, &Stored::new("out"))
    }

    #[test]
    fn an_ack_from_another_stream_names_it() {
        for payload in [
            r#"{"stream":"ORDERS","seq":7}"#,
            r#"{"stream":"out2","seq":7}"#,
            r#"{"seq":7,"stream":"ORDERS"}"#,
        ] {
            let refused = outcome(&ack(payload, None)).expect_err(payload);
            let elsewhere = std::error::Error::source(&refused)
                .and_then(|e| e.downcast_ref::<StoredElsewhere>())
                .expect("names the stream");
            assert_ne!(elsewhere.stream, "out", "{payload}");
        }
        assert!(outcome(&ack(r#"{"seq":7,"stream":"out"}"#, None)).is_ok());
        assert!(outcome(&ack(r#"{"stream":"out","domain":"hub","seq":7}"#, None)).is_ok());
    }

    #[test]
    fn acks_confirm_also_as_duplicates_and_errors_keep_their_code() {
        assert!(outcome(&ack(r#"{"stream":"out","seq":7}"#, None)).is_ok());
        assert!(outcome(&ack(r#"{"stream":"out","seq":7,"duplicate":true}"#, None)).is_ok());
        // A stream named "error" is no error.
        assert!(
            super::outcome(
                &ack(r#"{"stream":"error","seq":7}"#, None),
                &Stored::new("error")
            )
            .is_ok()
        );
        let refused = outcome(&ack(
            r#"{"error":{"code":400,"err_code":10054,"description":"message size exceeds maximum allowed"}}"#,
            None,
        ))
        .expect_err("an error ack");
        let api = std::error::Error::source(&refused)
            .and_then(|e| e.downcast_ref::<jetstream::Error>())
            .expect("the server's error");
        assert_eq!(
            api.error_code(),
            jetstream::ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM
        );
        let none = outcome(&ack("", Some(StatusCode::NO_RESPONDERS))).expect_err("no stream");
        assert_eq!(none.kind(), PublishErrorKind::StreamNotFound);
        assert_eq!(
            outcome(&ack("garbage", None))
                .expect_err("not an ack")
                .kind(),
            PublishErrorKind::Other
        );
    }

    #[test]
    fn an_ack_is_matched_to_its_token_and_other_messages_are_not() {
        let (to, _) = replies();
        let replies_of = |subject: &str| {
            let mut message = ack(r#"{"stream":"out","seq":1}"#, None);
            message.subject = Subject::from(subject);
            let token = to.token_of(&message.subject)?;
            Some((token, super::outcome(&message, &Stored::new("out")).is_ok()))
        };
        assert_eq!(replies_of("_INBOX.abc.41"), Some((41, true)));
        assert_eq!(replies_of("_INBOX.abc.x"), None);
        assert_eq!(replies_of("_INBOX.other.41"), None);
    }
}
