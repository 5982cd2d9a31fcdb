//! The Stream's status, from what the reconcile found and did: pure, so that every condition
//! is tested as a plain function. `lastTransitionTime` moves only when a condition's status
//! does ([`condition::merge`]).

use jetflow_crds::condition::{self, Condition, types};
use jetflow_crds::stream::StreamState;
use jetflow_crds::{Stream, StreamStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::diff;
use crate::reasons;

/// The status so far: the previous conditions and state, for this generation and stream name.
fn base(s: &Stream, name: &str) -> StreamStatus {
    let old = s.status.clone().unwrap_or_default();
    StreamStatus {
        observed_generation: s.metadata.generation,
        stream_name: Some(name.to_owned()),
        conditions: old.conditions,
        state: old.state,
    }
}

/// The status of a Stream whose spec is invalid: SpecValid and Ready false and Stalled true,
/// with `message`.
pub fn invalid(s: &Stream, name: &str, message: &str, now: Time) -> StreamStatus {
    let generation = s.metadata.generation;
    let mut status = base(s, name);
    for c in [
        condition::new(
            types::SPEC_VALID,
            false,
            reasons::INVALID_SPEC,
            message,
            generation,
            now.clone(),
        ),
        condition::new(
            types::READY,
            false,
            reasons::INVALID_SPEC,
            message,
            generation,
            now.clone(),
        ),
        condition::new(
            types::STALLED,
            true,
            reasons::INVALID_SPEC,
            message,
            generation,
            now.clone(),
        ),
    ] {
        condition::merge(&mut status.conditions, c);
    }
    status
}

/// The status so far of a Stream whose spec is valid.
fn valid(s: &Stream, name: &str, now: &Time) -> StreamStatus {
    let mut status = base(s, name);
    condition::merge(
        &mut status.conditions,
        condition::new(
            types::SPEC_VALID,
            true,
            reasons::VALID,
            "the spec is valid",
            s.metadata.generation,
            now.clone(),
        ),
    );
    status.conditions.retain(|c| c.type_ != types::STALLED);
    status
}

/// The status of a Stream in Observe mode: Ready while the stream exists (`state`).
pub fn observed(s: &Stream, name: &str, state: Option<StreamState>, now: Time) -> StreamStatus {
    let generation = s.metadata.generation;
    let mut status = valid(s, name, &now);
    let ready = match &state {
        Some(_) => condition::new(
            types::READY,
            true,
            reasons::OBSERVED,
            format!("stream {name} exists; observed read-only"),
            generation,
            now,
        ),
        None => condition::new(
            types::READY,
            false,
            reasons::STREAM_NOT_FOUND,
            format!("stream {name} does not exist; a Stream in Observe mode never creates it"),
            generation,
            now,
        ),
    };
    status.state = state;
    condition::merge(&mut status.conditions, ready);
    status
}

/// The status of a managed Stream: Ready, and Degraded while a field JetStream cannot change
/// (`fixed`) differs from the spec.
pub fn managed(
    s: &Stream,
    name: &str,
    state: StreamState,
    fixed: &[diff::Fixed],
    now: Time,
) -> StreamStatus {
    let mut status = valid(s, name, &now);
    status.state = Some(state);
    merge_managed_conditions(
        &mut status.conditions,
        name,
        fixed,
        s.metadata.generation,
        now,
    );
    status
}

fn merge_managed_conditions(
    conditions: &mut Vec<Condition>,
    name: &str,
    fixed: &[diff::Fixed],
    generation: Option<i64>,
    now: Time,
) {
    condition::merge(
        conditions,
        condition::new(
            types::READY,
            true,
            reasons::SYNCED,
            format!("stream {name} exists and is managed"),
            generation,
            now.clone(),
        ),
    );
    let degraded = if fixed.is_empty() {
        condition::new(
            types::DEGRADED,
            false,
            reasons::AS_DECLARED,
            "the stream matches the declared configuration",
            generation,
            now.clone(),
        )
    } else {
        let parts: Vec<String> = fixed
            .iter()
            .map(|f| {
                format!(
                    "{} cannot be changed on an existing stream (it is {}, the spec asks for {})",
                    f.field, f.actual, f.desired
                )
            })
            .collect();
        condition::new(
            types::DEGRADED,
            true,
            reasons::CANNOT_CHANGE,
            format!(
                "{}; to change it, create a new stream (or delete this one, losing its data) and apply again",
                parts.join("; ")
            ),
            generation,
            now.clone(),
        )
    };
    condition::merge(conditions, degraded);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream() -> Stream {
        let spec = serde_json::from_value(serde_json::json!({"subjects": ["orders.>"]}))
            .expect("a valid spec");
        let mut s = Stream::new("orders", spec);
        s.metadata.generation = Some(3);
        s
    }

    fn at(secs: i64) -> Time {
        Time(jiff::Timestamp::from_second(secs).unwrap())
    }

    fn reason<'a>(status: &'a StreamStatus, type_: &str) -> Option<(&'a str, &'a str)> {
        condition::find(&status.conditions, type_).map(|c| (c.status.as_str(), c.reason.as_str()))
    }

    #[test]
    fn an_invalid_spec_stalls_until_it_is_valid_again() {
        let mut s = stream();
        let invalid = invalid(&s, "ORDERS", "spec.subjects: empty", at(10));
        assert_eq!(
            reason(&invalid, types::SPEC_VALID),
            Some(("False", reasons::INVALID_SPEC))
        );
        assert_eq!(
            reason(&invalid, types::READY),
            Some(("False", reasons::INVALID_SPEC))
        );
        assert_eq!(
            reason(&invalid, types::STALLED),
            Some(("True", reasons::INVALID_SPEC))
        );
        assert_eq!(invalid.observed_generation, Some(3));
        s.status = Some(invalid);
        let fixed = managed(&s, "ORDERS", StreamState::default(), &[], at(20));
        assert_eq!(
            reason(&fixed, types::SPEC_VALID),
            Some(("True", reasons::VALID))
        );
        assert_eq!(reason(&fixed, types::STALLED), None);
        assert_eq!(
            reason(&fixed, types::READY),
            Some(("True", reasons::SYNCED))
        );
        assert_eq!(
            reason(&fixed, types::DEGRADED),
            Some(("False", reasons::AS_DECLARED))
        );
    }

    #[test]
    fn a_field_jetstream_cannot_change_degrades_a_managed_stream() {
        let fixed = [diff::Fixed {
            field: "storage",
            actual: "File".into(),
            desired: "Memory".into(),
        }];
        let status = managed(&stream(), "ORDERS", StreamState::default(), &fixed, at(10));
        assert_eq!(
            reason(&status, types::DEGRADED),
            Some(("True", reasons::CANNOT_CHANGE))
        );
        let message = &condition::find(&status.conditions, types::DEGRADED)
            .unwrap()
            .message;
        assert!(message.contains("storage cannot be changed"), "{message}");
    }

    #[test]
    fn an_observed_stream_is_ready_while_it_exists() {
        let s = stream();
        let found = observed(&s, "ORDERS", Some(StreamState::default()), at(10));
        assert_eq!(
            reason(&found, types::READY),
            Some(("True", reasons::OBSERVED))
        );
        assert!(found.state.is_some());
        let missing = observed(&s, "ORDERS", None, at(10));
        assert_eq!(
            reason(&missing, types::READY),
            Some(("False", reasons::STREAM_NOT_FOUND))
        );
        assert_eq!(missing.state, None);
    }
}
