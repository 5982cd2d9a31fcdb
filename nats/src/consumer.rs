//! Settings of a split's durable consumer that the operator (which creates consumers) and the
//! worker (which recreates one that is missing or disagrees with the checkpoint) must agree on,
//! or each would see the other's consumer as drifted.

use std::time::Duration;

/// Messages a consumer may hand out before the checkpoint that acknowledges them: well above
/// rate × interval for any single split, since acknowledgements come only with checkpoints.
pub const MAX_ACK_PENDING: i64 = 1_000_000;

/// How long the server waits for an acknowledgement before redelivering: two checkpoint
/// intervals plus 30 s, so that a message merely waiting for its checkpoint is not redelivered.
pub fn ack_wait(checkpoint_interval: Duration) -> Duration {
    checkpoint_interval * 2 + Duration::from_secs(30)
}
