//! Translation between a [`StreamSpec`] and JetStream's stream configuration and state.

use std::time::Duration;

use async_nats::jetstream::stream::{
    self, DiscardPolicy, RetentionPolicy, StorageType, SubjectTransform,
};
use jetflow_crds::stream::{Discard, Retention, Storage, StreamSpec, StreamState};

/// JetStream's default duplicate window, used when the spec sets none.
pub const DEFAULT_DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

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
