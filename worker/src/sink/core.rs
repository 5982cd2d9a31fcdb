//! The NATS Core sink: a plain publish per output, delivered once a round trip on the same
//! connection has followed it.
//!
//! A Core publish has no acknowledgement of its own, and the client's flush only says that the
//! bytes were written to the socket: a server that dies (or a connection that breaks) before
//! reading them loses them, and the client reconnects and carries on. So [`Sink::send`] returns
//! [`Confirmation::Sent`] with the connection's generation (how often it was established,
//! read before the publish), and the split task keeps the output in its window until
//! [`Sink::round_trip`] confirms it: a request the server answers (nobody listens on its
//! subject, so the server itself replies "no responders") proves that the server processed
//! every publish before it on that connection, if the connection was not replaced meanwhile.
//! An output sent on an earlier generation is published again (at least once). That makes a
//! JetStream source into Core at least once, also across a nats-server restart. Outputs keep
//! their `Nats-Msg-Id` header, so a subscriber can drop the repeats.
//!
//! [`PipelineSink`] is the sink a runner holds: JetStream or Core, chosen by the pipeline's
//! spec; dispatching on it costs one match per output.

use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::{RequestErrorKind, Subject};

use super::jetstream::JetStreamSink;
use super::{Confirmation, OutputMessage, Sink, SinkError};

/// How long a round trip may take before the outputs it should confirm are published again.
const ROUND_TRIP_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a waiting round trip checks whether the connection was replaced.
const REPLACED_POLL: Duration = Duration::from_millis(50);

/// A Core connection whose publishes are confirmed by round trips.
#[derive(Clone, Debug)]
pub struct CoreConnection {
    client: async_nats::Client,
    /// A subject nobody subscribes to, under the client's inbox prefix: the server answers a
    /// request on it at once with "no responders".
    probe: Subject,
}

impl CoreConnection {
    /// Round trips over `client`.
    pub fn new(client: async_nats::Client) -> Self {
        let probe = Subject::from(format!("{}.confirm", client.new_inbox()));
        Self { client, probe }
    }

    /// The client.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// The connection's generation: how often it has been established. A publish made at one
    /// generation and a round trip completed at the same generation went over one connection.
    pub fn generation(&self) -> u64 {
        self.client.statistics().connects.load(Ordering::Acquire)
    }

    /// A round trip to the server after everything published so far. Returns the generation
    /// on which it completed: every publish sent at that generation before the call reached the
    /// server. A connection replaced during the round trip is an error.
    pub async fn round_trip(&self) -> Result<u64, SinkError> {
        let before = self.generation();
        let request = async_nats::Request::new().timeout(Some(ROUND_TRIP_TIMEOUT));
        let request = self.client.send_request(self.probe.clone(), request);
        // A request sent over a connection that broke is never answered: stop waiting as soon
        // as the connection is replaced.
        let replaced = async {
            while self.generation() == before {
                tokio::time::sleep(REPLACED_POLL).await;
            }
        };
        let answer = tokio::select! {
            answer = request => answer,
            () = replaced => return Err(SinkError::Reconnected),
        };
        match answer {
            Ok(_) => {}
            Err(e) if e.kind() == RequestErrorKind::NoResponders => {}
            Err(source) => return Err(SinkError::RoundTrip { source }),
        }
        let after = self.generation();
        if before == after {
            Ok(before)
        } else {
            Err(SinkError::Reconnected)
        }
    }
}

/// Publishes to NATS Core subjects.
#[derive(Clone, Debug)]
pub struct CoreSink {
    connection: CoreConnection,
}

impl CoreSink {
    /// A sink publishing over `client`.
    pub fn new(client: async_nats::Client) -> Self {
        Self {
            connection: CoreConnection::new(client),
        }
    }
}

impl Sink for CoreSink {
    async fn send(
        &self,
        message: OutputMessage,
        _replies: Option<&super::jetstream::ReplyTo>,
    ) -> Result<Confirmation, SinkError> {
        let OutputMessage {
            subject,
            headers,
            payload,
        } = message;
        // Read before the publish: a reconnect after this point makes the output unconfirmed
        // (published again) rather than confirmed by a round trip on a connection it never
        // went over.
        let generation = self.connection.generation();
        self.connection
            .client()
            .publish_with_headers(subject.clone(), headers, payload)
            .await
            .map_err(|source| SinkError::CorePublish {
                subject: subject.to_string(),
                source,
            })?;
        Ok(Confirmation::Sent { generation })
    }

    async fn round_trip(&self) -> Result<Option<u64>, SinkError> {
        self.connection.round_trip().await.map(Some)
    }

    fn deduplicates(&self) -> bool {
        false
    }

    fn size_limit(&self) -> Option<super::SizeLimit> {
        Some(super::SizeLimit {
            bytes: self.connection.client().max_payload(),
            refusal: super::Refusal::MaxPayload,
            name: "the server's max_payload",
        })
    }
}

/// The sink of a pipeline: JetStream (exactly once by message id) or NATS Core (at least once).
#[derive(Clone, Debug)]
pub enum PipelineSink {
    /// `spec.sink.jetstream`.
    JetStream(Box<JetStreamSink>),
    /// `spec.sink.core`.
    Core(CoreSink),
}

impl Sink for PipelineSink {
    async fn replies(&self) -> Option<super::jetstream::Replies> {
        match self {
            Self::JetStream(sink) => sink.replies().await,
            Self::Core(_) => None,
        }
    }

    async fn send(
        &self,
        message: OutputMessage,
        replies: Option<&super::jetstream::ReplyTo>,
    ) -> Result<Confirmation, SinkError> {
        match self {
            Self::JetStream(sink) => sink.send(message, replies).await,
            Self::Core(sink) => sink.send(message, replies).await,
        }
    }

    async fn round_trip(&self) -> Result<Option<u64>, SinkError> {
        match self {
            Self::JetStream(sink) => sink.round_trip().await,
            Self::Core(sink) => sink.round_trip().await,
        }
    }

    fn deduplicates(&self) -> bool {
        match self {
            Self::JetStream(sink) => sink.deduplicates(),
            Self::Core(sink) => sink.deduplicates(),
        }
    }

    async fn admit(&self, subject: &str) -> Result<(), SinkError> {
        match self {
            Self::JetStream(sink) => sink.admit(subject).await,
            Self::Core(sink) => sink.admit(subject).await,
        }
    }

    async fn unconfirmed(
        &self,
        subject: &str,
        source: async_nats::jetstream::context::PublishError,
    ) -> SinkError {
        match self {
            Self::JetStream(sink) => sink.unconfirmed(subject, source).await,
            Self::Core(sink) => sink.unconfirmed(subject, source).await,
        }
    }

    fn size_limit(&self) -> Option<super::SizeLimit> {
        match self {
            Self::JetStream(sink) => sink.size_limit(),
            Self::Core(sink) => sink.size_limit(),
        }
    }
}
