//! Translation between a [`StreamSpec`] and JetStream's stream configuration and state.

use std::time::Duration;

use async_nats::jetstream::stream::{
    self, DiscardPolicy, RetentionPolicy, StorageType, SubjectTransform,
};
use jetflow_crds::stream::{Discard, Retention, Storage, StreamSpec, StreamState};

/// JetStream's default duplicate window, used when the spec sets none.
pub const DEFAULT_DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// The name of `retention` when jetflow cannot read a source stream that has it, `None` for
/// `Limits`. jetflow keeps a split's position in its own checkpoint and deletes and recreates
/// its consumers (on restart, on a retired split, on a reset); on an `Interest` or `WorkQueue`
/// stream deleting a consumer removes the messages it had not acknowledged, and those streams
/// forget what was acknowledged, so a rewind could not work. The operator and the worker both
/// refuse such a source with this rule.
pub fn unsupported_source_retention(retention: RetentionPolicy) -> Option<&'static str> {
    match retention {
        RetentionPolicy::Limits => None,
        RetentionPolicy::Interest => Some("Interest"),
        RetentionPolicy::WorkQueue => Some("WorkQueue"),
    }
}

/// A source stream whose retention jetflow does not read (see
/// [`unsupported_source_retention`]); its message names the field and what to do.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "spec.source.jetstream.stream: stream {stream} has {retention} retention; jetflow reads only streams with Limits retention (it keeps positions in its checkpoints and deletes and recreates consumers, which on a {retention} stream removes messages not yet processed); read a Limits stream that sources or mirrors {stream}"
)]
pub struct UnsupportedRetention {
    /// The stream.
    pub stream: String,
    /// Its retention.
    pub retention: &'static str,
}

/// The JetStream configuration that a Stream spec declares, for the stream called `name`.
pub fn stream_config(name: &str, spec: &StreamSpec) -> stream::Config {
    stream::Config {
        name: name.to_owned(),
        description: spec.description.clone(),
        subjects: spec.subjects.clone(),
        storage: match spec.storage {
            Storage::File => StorageType::File,
            Storage::Memory => StorageType::Memory,
        },
        retention: match spec.retention {
            Retention::Limits => RetentionPolicy::Limits,
            Retention::Interest => RetentionPolicy::Interest,
            Retention::WorkQueue => RetentionPolicy::WorkQueue,
        },
        max_age: spec.max_age.as_ref().map(|d| d.get()).unwrap_or_default(),
        max_bytes: spec
            .max_bytes
            .as_ref()
            .map_or(-1, |b| i64::try_from(b.bytes()).unwrap_or(i64::MAX)),
        max_messages: spec.max_msgs.unwrap_or(-1),
        max_message_size: spec
            .max_msg_size
            .as_ref()
            .map_or(-1, |b| i32::try_from(b.bytes()).unwrap_or(i32::MAX)),
        max_messages_per_subject: spec.max_msgs_per_subject.unwrap_or(-1),
        num_replicas: usize::try_from(spec.replicas.max(1)).unwrap_or(1),
        discard: match spec.discard {
            Discard::Old => DiscardPolicy::Old,
            Discard::New => DiscardPolicy::New,
        },
        duplicate_window: spec
            .duplicate_window
            .as_ref()
            .map_or(DEFAULT_DUPLICATE_WINDOW, |d| d.get()),
        subject_transform: spec.subject_transform.as_ref().map(|t| SubjectTransform {
            source: t.source.clone(),
            destination: t.destination.clone(),
        }),
        ..Default::default()
    }
}

/// A stream's state in the form of the Stream's status.
pub fn stream_state(info: &stream::Info) -> StreamState {
    StreamState {
        messages: info.state.messages,
        bytes: info.state.bytes,
        first_sequence: info.state.first_sequence,
        last_sequence: info.state.last_sequence,
        consumer_count: info.state.consumer_count as u64,
    }
}
