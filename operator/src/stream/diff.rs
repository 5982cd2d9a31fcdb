//! What differs between the stream a Stream declares and the stream JetStream has, split into
//! what an update can change and what it cannot. Pure.

use async_nats::jetstream::stream::Config;

/// A field JetStream will not change on an existing stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fixed {
    /// The field, as named in the Stream spec.
    pub field: &'static str,
    /// The stream's value.
    pub actual: String,
    /// The declared value.
    pub desired: String,
}

/// The differences between a declared and an actual stream configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diff {
    /// Fields an update changes, as named in the Stream spec.
    pub mutable: Vec<&'static str>,
    /// Fields an update cannot change (storage).
    pub fixed: Vec<Fixed>,
}

impl Diff {
    /// Whether nothing differs.
    pub fn is_empty(&self) -> bool {
        self.mutable.is_empty() && self.fixed.is_empty()
    }
}

/// Compares the fields a Stream declares.
pub fn diff(desired: &Config, actual: &Config) -> Diff {
    let mut d = Diff::default();
    let mut check = |field: &'static str, same: bool| {
        if !same {
            d.mutable.push(field);
        }
    };
    check(
        "description",
        desired.description.as_deref().unwrap_or("") == actual.description.as_deref().unwrap_or(""),
    );
    check("subjects", desired.subjects == actual.subjects);
    check("retention", desired.retention == actual.retention);
    check("maxAge", desired.max_age == actual.max_age);
    check("maxBytes", desired.max_bytes == actual.max_bytes);
    check("maxMsgs", desired.max_messages == actual.max_messages);
    check(
        "maxMsgSize",
        desired.max_message_size == actual.max_message_size,
    );
    check(
        "maxMsgsPerSubject",
        desired.max_messages_per_subject == actual.max_messages_per_subject,
    );
    check("replicas", desired.num_replicas == actual.num_replicas);
    check("discard", desired.discard == actual.discard);
    check(
        "duplicateWindow",
        desired.duplicate_window == actual.duplicate_window,
    );
    check(
        "subjectTransform",
        desired.subject_transform == actual.subject_transform,
    );
    if desired.storage != actual.storage {
        d.fixed.push(Fixed {
            field: "storage",
            actual: format!("{:?}", actual.storage),
            desired: format!("{:?}", desired.storage),
        });
    }
    d
}

/// The configuration to send in an update: the declared one with the fields JetStream cannot
/// change kept as they are, so that the rest is still brought in line.
pub fn updatable(desired: &Config, actual: &Config, keep_retention: bool) -> Config {
    let mut config = desired.clone();
    config.storage = actual.storage;
    if keep_retention {
        config.retention = actual.retention;
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_nats::jetstream::stream::StorageType;
    use jetflow_crds::stream::{Storage, StreamSpec};

    #[test]
    fn storage_is_fixed_and_limits_are_mutable() {
        let spec = StreamSpec {
            subjects: vec!["a.>".into()],
            replicas: 1,
            ..Default::default()
        };
        let actual = jetflow_nats::stream_config("S", &spec);
        let mut desired_spec = spec.clone();
        desired_spec.storage = Storage::Memory;
        desired_spec.max_msgs = Some(10);
        let desired = jetflow_nats::stream_config("S", &desired_spec);
        let d = diff(&desired, &actual);
        assert_eq!(d.mutable, vec!["maxMsgs"]);
        assert_eq!(d.fixed.len(), 1);
        assert_eq!(d.fixed[0].field, "storage");
        let update = updatable(&desired, &actual, false);
        assert_eq!(update.storage, StorageType::File);
        assert_eq!(update.max_messages, 10);
        assert!(diff(&actual, &actual).is_empty());
    }
}
