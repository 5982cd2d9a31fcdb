//! Status conditions in the Kubernetes API conventions, and the merge that keeps
//! `lastTransitionTime` still unless a condition's status really changes.

pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// Condition types used on Pipelines and Streams.
pub mod types {
    /// The resource does what it declares.
    pub const READY: &str = "Ready";
    /// A change is being rolled out.
    pub const PROGRESSING: &str = "Progressing";
    /// Something is wrong that needs attention; the resource may still work in part.
    pub const DEGRADED: &str = "Degraded";
    /// No checkpoint was taken for longer than expected.
    pub const CHECKPOINT_STALE: &str = "CheckpointStale";
    /// The spec is valid (false with a reason and message that name the field).
    pub const SPEC_VALID: &str = "SpecValid";
    /// Nothing will change until the spec does (kstatus' `Stalled`, which Flux and kstatus
    /// read as Failed): true with the invalid spec's reason and message, absent otherwise.
    pub const STALLED: &str = "Stalled";
}

/// Sets `Stalled` to `stalled` (true: a condition with `reason` and `message`; false: none),
/// as kstatus expects of a resource that waits for its spec to change.
pub fn set_stalled(
    conditions: &mut Vec<Condition>,
    stalled: Option<(&str, String)>,
    generation: Option<i64>,
    now: Time,
) {
    match stalled {
        Some((reason, message)) => merge(
            conditions,
            new(types::STALLED, true, reason, message, generation, now),
        ),
        None => conditions.retain(|c| c.type_ != types::STALLED),
    }
}

/// Builds a condition for `generation`, stamped with `now`.
pub fn new(
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: Time,
) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: if status { "True" } else { "False" }.to_owned(),
        reason: reason.to_owned(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: now,
    }
}

/// Puts `new` into `conditions`, replacing the one of the same type. The previous
/// `lastTransitionTime` is kept when the status did not change, so that a resync that finds
/// nothing new writes nothing new. Conditions stay sorted by type, for stable output.
pub fn merge(conditions: &mut Vec<Condition>, mut new: Condition) {
    if let Some(old) = conditions.iter_mut().find(|c| c.type_ == new.type_) {
        if old.status == new.status {
            new.last_transition_time = old.last_transition_time.clone();
        }
        *old = new;
    } else {
        conditions.push(new);
    }
    conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
}

/// The condition of the given type, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition of the given type is present with status `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Time {
        Time(jiff::Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn transition_time_moves_only_when_status_changes() {
        let mut conds = vec![];
        merge(
            &mut conds,
            new("Ready", false, "Pending", "starting", Some(1), at(10)),
        );
        merge(
            &mut conds,
            new("Ready", false, "Pending", "still starting", Some(1), at(20)),
        );
        assert_eq!(conds[0].last_transition_time, at(10));
        assert_eq!(conds[0].message, "still starting");
        merge(
            &mut conds,
            new(
                "Ready",
                true,
                "Running",
                "all workers ready",
                Some(1),
                at(30),
            ),
        );
        assert_eq!(conds[0].last_transition_time, at(30));
        assert!(is_true(&conds, "Ready"));
    }
}
