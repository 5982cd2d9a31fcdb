//! The dead-letter Stream: a `Stream` resource capturing the Pipeline's dead-letter subject,
//! for a Pipeline under `errors.policy: Dlq` when no stream captures that subject. Without
//! one, dead letters would have nowhere to be kept (the worker refuses to publish them where
//! nobody keeps them, and stops the split instead).
//!
//! Owned by the Pipeline: deleting the Pipeline deletes the resource, and its
//! `deletionPolicy: Retain` keeps the JetStream stream and the dead letters in it. Limits keep
//! it from growing without bound: a week of dead letters, at most 1 GiB, the oldest dropped
//! first.

use jetflow_crds::stream::{DeletionPolicy, StreamSpec};
use jetflow_crds::{ByteSize, Duration, Stream};

use super::{Inputs, owned_meta};

/// How long dead letters are kept.
pub const MAX_AGE: &str = "168h";
/// How much of them is kept, at most.
pub const MAX_BYTES: &str = "1Gi";

/// The name of the dead-letter Stream resource (and of its JetStream stream).
pub fn name(pipeline: &str) -> String {
    format!("{pipeline}-dlq")
}

/// The dead-letter Stream of the Pipeline.
pub fn stream(inputs: &Inputs<'_>) -> Stream {
    let p = inputs.pipeline;
    let subject = p.dead_letter_subject();
    Stream {
        metadata: owned_meta(inputs, name(inputs.name)),
        spec: StreamSpec {
            description: Some(format!(
                "dead letters of Pipeline {}/{} ({subject})",
                inputs.namespace, inputs.name
            )),
            subjects: vec![subject],
            max_age: Some(MAX_AGE.parse::<Duration>().expect("a valid duration")),
            max_bytes: Some(MAX_BYTES.parse::<ByteSize>().expect("a valid size")),
            connection: p.spec.connection.clone(),
            replicas: 1,
            deletion_policy: DeletionPolicy::Retain,
            ..Default::default()
        },
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::build::golden;
    use crate::pipeline::fixtures;

    #[test]
    fn the_dead_letter_stream_captures_the_dead_letter_subject_with_limits() {
        let p = fixtures::pipeline();
        let inputs = fixtures::inputs(&p);
        let s = stream(&inputs);
        assert_eq!(s.spec.subjects, vec![p.dead_letter_subject()]);
        assert_eq!(
            s.metadata.owner_references.as_ref().map(Vec::len),
            Some(1),
            "owned by the Pipeline"
        );
        golden::check(
            "dead-letter-stream.yaml",
            &serde_yaml_ng::to_string(&s).unwrap(),
        );
    }
}
