//! Sources: reading a split and acknowledging what a checkpoint committed, as two traits.
//!
//! A [`SplitReader`] yields one split's messages in stream order, each with its position (the
//! stream sequence) and an [`AckToken`]; it hides the connector's transient failures (missed
//! heartbeats, a deleted consumer) and never yields a message at or below one it already
//! yielded. A [`SourceAcker`] acknowledges cumulatively, once the checkpoint that covers a
//! position is committed. One file per connector translates between NATS and these types.

pub mod bounded;
pub mod core;
pub mod jetstream;
pub mod readers;

use std::future::Future;

use async_nats::{HeaderMap, Subject};
use bytes::Bytes;
use futures::future::BoxFuture;

/// One message read from a split.
#[derive(Debug)]
pub struct SourceMessage {
    /// The subject it was published on.
    pub subject: Subject,
    /// Its headers.
    pub headers: Option<HeaderMap>,
    /// Its payload.
    pub payload: Bytes,
    /// Its position: the stream sequence.
    pub seq: u64,
    /// What acknowledges it (and, cumulatively, everything before it).
    pub ack: AckToken,
    /// The incarnation of the source stream it was read from (none for NATS Core).
    pub stream: Incarnation,
}

/// Which incarnation of a JetStream source stream a message comes from: a stream deleted and
/// created again under the same name counts its sequences anew.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Incarnation {
    /// The stream's creation time (JetStream's `created`); none for a NATS Core source.
    pub created: Option<jiff::Timestamp>,
    /// The reader found the stream recreated under the split's committed position: positions
    /// of this incarnation start anew.
    pub recreated: bool,
}

/// What a split's reader task hands its split task, in order.
#[derive(Debug)]
pub enum Read {
    /// The next message.
    Message(SourceMessage),
    /// The split ended (a bounded split reached its bound): it is finished once what came
    /// before is processed and confirmed.
    End,
    /// The reader failed for good: the split fails and its committed position stays; it is
    /// never committed as finished.
    Failed(SourceError),
}

/// Where a split's reader records the last retention gap it found (see
/// [`jetflow_crds::checkpoint::RetentionGap`]), for the runner to commit with the next
/// checkpoint.
pub type GapSlot = std::sync::Arc<std::sync::Mutex<Option<jetflow_crds::checkpoint::RetentionGap>>>;

/// What a source needs to acknowledge a message: for JetStream its reply subject.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AckToken(pub Option<Subject>);

/// Reads one split.
pub trait SplitReader: Send + 'static {
    /// The next message; `Ok(None)` when the split has ended (a bounded run reached its bound).
    /// Transient failures are retried inside; an error is one the reader cannot get past.
    fn next(&mut self) -> impl Future<Output = Result<Option<SourceMessage>, SourceError>> + Send;
}

/// Acknowledges a split's messages up to a position.
pub trait SourceAcker: Send + Sync + 'static {
    /// Acknowledges the message of `token` and everything before it, and waits for the
    /// server's confirmation.
    fn ack<'a>(&'a self, token: &'a AckToken) -> BoxFuture<'a, Result<(), SourceError>>;
}

/// Why a source failed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The source stream could not be looked up.
    #[error("split {split}: cannot look up stream {stream}: {source}")]
    GetStream {
        /// The split.
        split: String,
        /// The stream.
        stream: String,
        /// The client's error.
        source: async_nats::jetstream::context::GetStreamError,
    },
    /// The split's consumer could not be read.
    #[error("split {split}: cannot read consumer {consumer}: {source}")]
    ConsumerInfo {
        /// The split.
        split: String,
        /// The consumer.
        consumer: String,
        /// The client's error.
        source: async_nats::jetstream::context::ConsumerInfoError,
    },
    /// The split's consumer could not be deleted (to recreate it at the checkpoint).
    #[error("split {split}: cannot delete consumer {consumer}: {source}")]
    DeleteConsumer {
        /// The split.
        split: String,
        /// The consumer.
        consumer: String,
        /// The client's error.
        source: async_nats::jetstream::stream::ConsumerError,
    },
    /// The split's consumer could not be created.
    #[error("split {split}: cannot create consumer {consumer}: {source}")]
    CreateConsumer {
        /// The split.
        split: String,
        /// The consumer.
        consumer: String,
        /// The client's error.
        source: async_nats::jetstream::stream::ConsumerError,
    },
    /// Pulling from the consumer could not start.
    #[error("split {split}: cannot pull from consumer {consumer}: {source}")]
    Pull {
        /// The split.
        split: String,
        /// The consumer.
        consumer: String,
        /// The client's error.
        source: async_nats::jetstream::consumer::StreamError,
    },
    /// The split's consumer configuration could not be made (its start time).
    #[error(transparent)]
    ConsumerConfig {
        /// The shared definition's error.
        source: jetflow_nats::consumer::ConfigError,
    },
    /// The split's consumer could not be updated in place.
    #[error("split {split}: cannot update consumer {consumer}: {source}")]
    UpdateConsumer {
        /// The split.
        split: String,
        /// The consumer.
        consumer: String,
        /// The client's error.
        source: async_nats::jetstream::stream::ConsumerUpdateError,
    },
    /// An acknowledgement was not confirmed.
    #[error("cannot acknowledge: {source}")]
    Ack {
        /// The client's error.
        source: async_nats::Error,
    },
}

impl SourceError {
    /// Whether the server refused the split's consumer for a consumer limit (the stream's
    /// `max_consumers` or the account's): the split is blocked until a consumer goes away or
    /// the limit is raised.
    pub fn consumer_limit(&self) -> bool {
        matches!(self, Self::CreateConsumer { source, .. } if jetflow_nats::consumer::refused_for_limit(source))
    }

    /// A stable category for metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Self::GetStream { .. } => "get_stream",
            Self::ConsumerInfo { .. } => "consumer_info",
            Self::DeleteConsumer { .. } => "delete_consumer",
            Self::CreateConsumer { .. } if self.consumer_limit() => "consumer_limit",
            Self::CreateConsumer { .. } => "create_consumer",
            Self::Pull { .. } => "pull",
            Self::ConsumerConfig { .. } => "start_time",
            Self::UpdateConsumer { .. } => "update_consumer",
            Self::Ack { .. } => "ack",
        }
    }
}
