//! Every reason the operator writes into a condition or an Event, and every Event action: one
//! place, so that a reason a user (or an alert) matches on is spelled once and never drifts
//! between the condition and the Event that report the same thing.
//!
//! Reasons are PascalCase, as the Kubernetes API conventions ask.

// Invalid specs and missing dependencies (SpecValid, Ready, Stalled; Warning Events).

/// A field is invalid.
pub const INVALID_SPEC: &str = "InvalidSpec";
/// A jq step does not compile.
pub const INVALID_STEP: &str = "InvalidStep";
/// The Pipeline cannot run, for no more specific reason.
pub const INVALID: &str = "Invalid";
/// A Pipeline failed validation, for no more specific reason (Event).
pub const FAILED: &str = "Failed";
/// The source stream does not exist.
pub const SOURCE_STREAM_NOT_FOUND: &str = "SourceStreamNotFound";
/// The source stream's retention is not `Limits`.
pub const UNSUPPORTED_SOURCE_RETENTION: &str = "UnsupportedSourceRetention";
/// The sink stream does not exist.
pub const SINK_STREAM_NOT_FOUND: &str = "SinkStreamNotFound";
/// The outputs or the dead letters would go where no stream keeps them, into another stream
/// than the sink stream, or back to the source (read again, for ever).
pub const INVALID_ROUTING: &str = "InvalidRouting";
/// The sink stream forgets message ids before a replay could repeat them.
pub const DUPLICATE_WINDOW_TOO_SHORT: &str = "DuplicateWindowTooShort";
/// The spec is valid.
pub const VALID: &str = "Valid";
/// The `jetflow.io/rewind` annotation cannot be read.
pub const INVALID_REWIND: &str = "InvalidRewind";

// A Pipeline's Ready, Progressing, Degraded and CheckpointStale conditions.

/// `spec.suspend` is true.
pub const SUSPENDED: &str = "Suspended";
/// Every split reached its bound.
pub const SUCCEEDED: &str = "Succeeded";
/// The workers run.
pub const RUNNING: &str = "Running";
/// Fewer workers are ready than asked for.
pub const WORKERS_NOT_READY: &str = "WorkersNotReady";
/// Every worker runs the current configuration.
pub const ROLLED_OUT: &str = "RolledOut";
/// Workers are being updated.
pub const ROLLING_OUT: &str = "RollingOut";
/// Nothing needs attention.
pub const AS_EXPECTED: &str = "AsExpected";
/// A split stopped on a message that failed under `errors.policy: Stop`.
pub const SPLIT_STOPPED: &str = "SplitStopped";
/// A split's source stream was deleted and created again; the split started anew.
pub const SOURCE_STREAM_RECREATED: &str = "SourceStreamRecreated";
/// A split resumed (or was refused) after its last commit had grown older than the sink
/// stream's duplicate window.
pub const DUPLICATE_WINDOW_EXCEEDED: &str = "DuplicateWindowExceeded";
/// The source stream's retention removed messages before a split read them.
pub const MESSAGES_EXPIRED: &str = "MessagesExpired";
/// Splits have no consumer because a consumer limit leaves no room for one.
pub const SPLITS_BLOCKED: &str = "SplitsBlocked";
/// No checkpoint for longer than expected.
pub const NO_RECENT_CHECKPOINT: &str = "NoRecentCheckpoint";
/// A checkpoint was taken recently.
pub const RECENT: &str = "Recent";
/// The pipeline is not running, so no checkpoint is expected.
pub const NOT_RUNNING: &str = "NotRunning";

// A Stream's Ready and Degraded conditions.

/// An Observe-mode stream exists.
pub const OBSERVED: &str = "Observed";
/// An Observe-mode stream does not exist.
pub const STREAM_NOT_FOUND: &str = "StreamNotFound";
/// A managed stream exists and is managed.
pub const SYNCED: &str = "Synced";
/// A managed stream matches its spec.
pub const AS_DECLARED: &str = "AsDeclared";
/// A managed stream differs from its spec in a field JetStream cannot change.
pub const CANNOT_CHANGE: &str = "CannotChange";

// Events of what the operator did.

/// Objects (or a stream) were created.
pub const CREATED: &str = "Created";
/// A stream was updated to its spec.
pub const UPDATED: &str = "Updated";
/// A stream edited outside jetflow was set back.
pub const REVERTED: &str = "Reverted";
/// A missing stream was created again.
pub const RECREATED: &str = "Recreated";
/// An existing stream, or a checkpoint left by an earlier Pipeline, was taken over.
pub const ADOPTED: &str = "Adopted";
/// The worker configuration changed; the workers restart.
pub const ROLLED: &str = "Rolled";
/// The checkpoint was discarded (`jetflow.io/reset`).
pub const RESET: &str = "Reset";
/// The splits were moved to another position (`jetflow.io/rewind`).
pub const REWOUND: &str = "Rewound";
/// The autoscaler asked for more workers.
pub const SCALED_UP: &str = "ScaledUp";
/// The autoscaler asked for fewer workers.
pub const SCALED_DOWN: &str = "ScaledDown";
/// Consumers or a stream were deleted with their resource.
pub const DELETED: &str = "Deleted";
/// A stream was kept when its resource was deleted.
pub const RETAINED: &str = "Retained";

/// What the operator was doing when it published an Event (the Event's `action`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventAction {
    /// Validating the spec.
    Validate,
    /// Resuming from a checkpoint left behind.
    Resume,
    /// Reading the rewind annotation.
    Rewind,
    /// Resetting or rewinding the checkpoint.
    Reset,
    /// Reading the checkpoint's splits.
    ReadCheckpoint,
    /// Choosing the number of workers.
    Autoscale,
    /// Providing a stream for the dead letters.
    DeadLetters,
    /// Adopting an existing stream.
    Adopt,
    /// Creating objects or a stream.
    Create,
    /// Updating objects or a stream.
    Update,
    /// Deleting with the resource.
    Delete,
}

impl EventAction {
    /// The action as an Event carries it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Validate => "Validate",
            Self::Resume => "Resume",
            Self::Rewind => "Rewind",
            Self::Reset => "Reset",
            Self::ReadCheckpoint => "ReadCheckpoint",
            Self::Autoscale => "Autoscale",
            Self::DeadLetters => "DeadLetters",
            Self::Adopt => "Adopt",
            Self::Create => "Create",
            Self::Update => "Update",
            Self::Delete => "Delete",
        }
    }
}
