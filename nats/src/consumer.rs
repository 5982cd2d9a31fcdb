//! The one definition of how a JetStream split is read: its durable pull consumer's
//! configuration ([`config`]), which acknowledgements it takes ([`Acks`], from the source
//! stream's retention), and the rule that says whether a live consumer can be used as it is
//! ([`judge`]). The operator (which creates each split's consumer before any worker runs, so
//! that consumers and lag are visible at once) and the worker (which recreates a consumer that
//! is missing or disagrees with its checkpoint) both call these; neither builds a consumer
//! configuration of its own, so neither ever finds the other's consumer drifted.
//!
//! On a `Limits` stream, the common case, the consumer takes no acknowledgements at all
//! ([`Acks::None`]): messages stay in the stream whatever any consumer does, and the worker
//! recovers from its own checkpoint, so the server need not track a pending entry for every
//! message read between two checkpoints. Such a consumer forgets what it delivered the moment it
//! sends it, so a delivery lost on the way (a connection dropped with messages in flight) is not
//! sent again: the reader watches the consumer sequence of what arrives (each delivery counts
//! one, with no redeliveries, so a jump is a loss) and the consumer's delivered count while
//! idle, and on a loss makes the consumer again after the last message it received.
//!
//! Where retention depends on acknowledgements (`Interest`, `WorkQueue`), a consumer would
//! acknowledge cumulatively at each checkpoint ([`Acks::AfterCheckpoint`], `AckPolicy::All`),
//! made to hold everything read between two checkpoints: max ack pending well above rate ×
//! interval, and an ack wait of two intervals plus 30 s. jetflow does not read such sources
//! today (see [`crate::stream::unsupported_source_retention`]); the mode is defined here so that
//! the choice stays one rule.
//!
//! Either way the consumer's state is kept in memory on the server: recovery comes from
//! jetflow's checkpoint, never from the consumer.
//!
//! Every consumer carries an inactivity threshold ([`inactive_threshold`], at least an hour):
//! a split's reader always has a pull request waiting, so a live consumer is never inactive,
//! while one whose pipeline is gone (its workers stopped, the operator's cleanup missed it) is
//! removed by the server instead of holding its state forever. A consumer removed while its
//! pipeline was only suspended is made again at its checkpoint when the pipeline resumes.
//!
//! Nothing here talks to NATS: the functions are pure, and the callers do the I/O and handle
//! its errors.

use std::time::Duration;

use async_nats::jetstream::consumer::{self, AckPolicy, DeliverPolicy, ReplayPolicy, pull};
use async_nats::jetstream::stream::RetentionPolicy;
use jetflow_crds::pipeline::{StartFrom, StartPosition};
use jetflow_crds::split::Split;

/// Messages a consumer may hand out before the checkpoint that acknowledges them: well above
/// rate × interval for any single split, since acknowledgements come only with checkpoints.
pub const MAX_ACK_PENDING: i64 = 1_000_000;

/// How long the server waits for an acknowledgement before redelivering: two checkpoint
/// intervals plus 30 s, so that a message merely waiting for its checkpoint is not redelivered.
pub fn ack_wait(checkpoint_interval: Duration) -> Duration {
    checkpoint_interval * 2 + Duration::from_secs(30)
}

/// The shortest inactivity threshold a split's consumer gets.
pub const MIN_INACTIVE_THRESHOLD: Duration = Duration::from_secs(3600);

/// How long a consumer may go without a pull request before the server removes it: an hour, or
/// ten ack waits for very long checkpoint intervals. A live split pulls all the time (a handover
/// pauses it for seconds), so only a consumer whose readers are gone ever reaches it.
pub fn inactive_threshold(checkpoint_interval: Duration) -> Duration {
    MIN_INACTIVE_THRESHOLD.max(ack_wait(checkpoint_interval) * 10)
}

/// Which acknowledgements a split's consumer takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acks {
    /// None (`AckPolicy::None`): the server keeps no pending state; the reader detects lost
    /// deliveries itself. For `Limits` streams.
    None,
    /// Cumulative acknowledgements at each checkpoint (`AckPolicy::All`), for streams whose
    /// retention depends on them.
    AfterCheckpoint,
}

impl Acks {
    /// The acknowledgements a split of a stream with `retention` is read with.
    pub fn for_retention(retention: RetentionPolicy) -> Self {
        match retention {
            RetentionPolicy::Limits => Self::None,
            RetentionPolicy::Interest | RetentionPolicy::WorkQueue => Self::AfterCheckpoint,
        }
    }

    /// The consumer's ack policy.
    pub fn policy(self) -> AckPolicy {
        match self {
            Self::None => AckPolicy::None,
            Self::AfterCheckpoint => AckPolicy::All,
        }
    }
}

/// Where a split's consumer starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Start {
    /// After a committed position (at position + 1).
    After(u64),
    /// As the spec says, for a split without a committed position.
    Spec(StartPosition),
}

impl Start {
    /// The start of a split whose committed position is `position` (0 or none: nothing
    /// committed yet, so the spec's start).
    pub fn from_checkpoint(position: Option<u64>, spec: &StartPosition) -> Self {
        match position {
            Some(p) if p > 0 => Self::After(p),
            _ => Self::Spec(spec.clone()),
        }
    }
}

/// Why a split's consumer configuration cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `start.from: Time` without a time.
    #[error("split {split}: spec.source.jetstream.start.time is required with from: Time")]
    MissingStartTime {
        /// The split.
        split: String,
    },
    /// The start time is out of the range JetStream takes.
    #[error("split {split}: spec.source.jetstream.start.time {time} cannot be used: {source}")]
    StartTime {
        /// The split.
        split: String,
        /// The time, as written.
        time: String,
        /// The conversion error.
        source: async_nats::Error,
    },
}

/// The deliver policy of `start` for `split`.
pub fn deliver_policy(split: &str, start: &Start) -> Result<DeliverPolicy, ConfigError> {
    Ok(match start {
        Start::After(position) => DeliverPolicy::ByStartSequence {
            start_sequence: position + 1,
        },
        Start::Spec(spec) => match spec.from {
            StartFrom::All => DeliverPolicy::All,
            StartFrom::New => DeliverPolicy::New,
            StartFrom::Sequence => DeliverPolicy::ByStartSequence {
                start_sequence: spec.sequence.unwrap_or(1).max(1),
            },
            StartFrom::Time => {
                let time = spec
                    .time
                    .as_ref()
                    .ok_or_else(|| ConfigError::MissingStartTime {
                        split: split.to_owned(),
                    })?
                    .0
                    .to_string();
                let start_time = async_nats::datetime::parse_rfc3339(&time).map_err(|source| {
                    ConfigError::StartTime {
                        split: split.to_owned(),
                        time: time.clone(),
                        source,
                    }
                })?;
                DeliverPolicy::ByStartTime { start_time }
            }
        },
    })
}

/// The subject filter of a split as the consumer takes it: none for the whole stream (`>`).
pub fn filter_subject(split: &Split) -> String {
    if split.subject == ">" {
        String::new()
    } else {
        split.subject.clone()
    }
}

/// The configuration of `split`'s durable consumer `name` (see
/// [`jetflow_crds::split::consumer_name`]), starting at `start`, taking `acks`, for a pipeline
/// that checkpoints every `checkpoint_interval`.
pub fn config(
    name: &str,
    split: &Split,
    start: &Start,
    acks: Acks,
    checkpoint_interval: Duration,
) -> Result<pull::Config, ConfigError> {
    Ok(pull::Config {
        name: Some(name.to_owned()),
        durable_name: Some(name.to_owned()),
        description: Some(format!("jetflow split {}", split.name)),
        filter_subject: filter_subject(split),
        ack_policy: acks.policy(),
        deliver_policy: deliver_policy(&split.name, start)?,
        ack_wait: ack_wait(checkpoint_interval),
        // Everything read between two checkpoints stays unacknowledged; a limit near
        // rate × interval would stall the split. (Without acks the server ignores it.)
        max_ack_pending: MAX_ACK_PENDING,
        max_deliver: -1,
        // Recovery comes from jetflow's checkpoint, not from the consumer's state.
        memory_storage: true,
        // A second line behind the operator's cleanup: a consumer nobody reads goes.
        inactive_threshold: inactive_threshold(checkpoint_interval),
        ..Default::default()
    })
}

/// What to do with a live consumer, given the one [`config`] describes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// It is what the reader wants: read through it as it is.
    Use,
    /// Only settings JetStream changes in place differ (ack wait after a change of the
    /// checkpoint interval, max ack pending, max deliver, inactivity threshold, description):
    /// update it, keeping its start and its state.
    Update,
    /// It cannot serve: delete it and create it again. The reason is for logs.
    Recreate(&'static str),
}

/// `0` and `-1` both mean "no limit" for max deliver (the server reports `-1`).
fn max_deliver(config: &consumer::Config) -> i64 {
    if config.max_deliver <= 0 {
        -1
    } else {
        config.max_deliver
    }
}

/// Compares a live consumer's settings with the desired ones, leaving out where it starts.
/// Used alone by the operator, which cannot know where a worker is reading now.
pub fn judge_settings(live: &consumer::Config, desired: &pull::Config) -> Verdict {
    // Settings JetStream refuses to change on an existing consumer, or that change what it
    // reads: the consumer must be made again.
    if live.memory_storage != desired.memory_storage {
        return Verdict::Recreate("its storage differs");
    }
    if live.ack_policy != desired.ack_policy {
        return Verdict::Recreate("its ack policy differs");
    }
    if live.deliver_subject.is_some() {
        return Verdict::Recreate("it is a push consumer");
    }
    if live.filter_subject != desired.filter_subject || !live.filter_subjects.is_empty() {
        return Verdict::Recreate("its subject filter differs");
    }
    if live.replay_policy != ReplayPolicy::Instant
        || live.headers_only
        || live.sample_frequency != 0
    {
        return Verdict::Recreate("it replays, samples or strips messages");
    }
    if live.ack_wait != desired.ack_wait
        || live.max_ack_pending != desired.max_ack_pending
        || max_deliver(live) != desired.max_deliver
        || live.inactive_threshold != desired.inactive_threshold
        || live.description != desired.description
    {
        return Verdict::Update;
    }
    Verdict::Use
}

/// Whether `live` can be read on from `start`: the whole rule the worker applies before it
/// reads a split, its settings ([`judge_settings`]) and its position.
///
/// After a committed position the consumer must have delivered exactly up to it (and, taking
/// acknowledgements, had them all, with nothing pending): otherwise it would skip messages, or
/// hold redeliveries back until its ack wait runs out. Without one, nothing was ever
/// acknowledged: the consumer may be kept only if it has delivered nothing yet and starts where
/// the spec says. A consumer that the operator created at the same start passes both.
pub fn judge(live: &consumer::Info, desired: &pull::Config, start: &Start) -> Verdict {
    let verdict = judge_settings(&live.config, desired);
    if matches!(verdict, Verdict::Recreate(_)) {
        return verdict;
    }
    let placed = match start {
        Start::After(position) if desired.ack_policy == AckPolicy::None => {
            live.delivered.stream_sequence == *position
        }
        Start::After(position) => {
            live.ack_floor.stream_sequence == *position
                && live.delivered.stream_sequence == *position
                && live.num_ack_pending == 0
        }
        Start::Spec(_) => {
            live.delivered.consumer_sequence == 0
                && live.config.deliver_policy == desired.deliver_policy
        }
    };
    if placed {
        verdict
    } else {
        Verdict::Recreate("its position disagrees with the checkpoint")
    }
}

/// The configuration that updates `live` in place to `desired` (a [`Verdict::Update`]): the
/// desired settings with the live start, which JetStream never changes on an existing consumer.
pub fn update_of(live: &consumer::Config, desired: &pull::Config) -> pull::Config {
    pull::Config {
        deliver_policy: live.deliver_policy,
        ..desired.clone()
    }
}

/// Whether the server refused to create a consumer because a consumer limit is reached: the
/// stream's `max_consumers`, or the account's (JetStream error 10026). Such a refusal does not
/// pass by itself as a restart does; only another consumer going away, or a higher limit, lets
/// the consumer be made.
pub fn refused_for_limit(error: &async_nats::jetstream::stream::ConsumerError) -> bool {
    matches!(
        error.kind(),
        async_nats::jetstream::stream::ConsumerErrorKind::JetStream(e)
            if e.error_code() == async_nats::jetstream::ErrorCode::MAXIMUM_CONSUMERS_LIMIT
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(subject: &str) -> Split {
        Split {
            name: subject.into(),
            subject: subject.into(),
        }
    }

    fn live(config: &pull::Config) -> consumer::Config {
        consumer::Config {
            durable_name: config.durable_name.clone(),
            name: config.name.clone(),
            description: config.description.clone(),
            deliver_policy: config.deliver_policy,
            ack_policy: config.ack_policy,
            ack_wait: config.ack_wait,
            max_ack_pending: config.max_ack_pending,
            // What the server reports for "no limit".
            max_deliver: -1,
            filter_subject: config.filter_subject.clone(),
            memory_storage: config.memory_storage,
            inactive_threshold: config.inactive_threshold,
            ..Default::default()
        }
    }

    #[test]
    fn a_split_is_read_with_cumulative_acks_held_between_checkpoints() {
        let interval = Duration::from_secs(5);
        let c = config(
            "c",
            &split("orders.eu"),
            &Start::Spec(StartPosition::default()),
            Acks::AfterCheckpoint,
            interval,
        )
        .unwrap();
        assert_eq!(c.ack_policy, AckPolicy::All);
        assert!(c.ack_wait > interval * 2);
        assert_eq!(c.max_ack_pending, MAX_ACK_PENDING);
        assert!(c.memory_storage);
        assert!(c.inactive_threshold >= Duration::from_secs(3600));
        assert!(c.inactive_threshold > c.ack_wait * 2);
        assert_eq!(c.deliver_policy, DeliverPolicy::All);
        assert_eq!(c.filter_subject, "orders.eu");
        let whole = config("c", &split(">"), &Start::After(41), Acks::None, interval).unwrap();
        assert_eq!(whole.ack_policy, AckPolicy::None);
        assert_eq!(whole.filter_subject, "");
        assert_eq!(
            whole.deliver_policy,
            DeliverPolicy::ByStartSequence { start_sequence: 42 }
        );
        assert_eq!(
            Start::from_checkpoint(Some(0), &StartPosition::default()),
            Start::Spec(StartPosition::default())
        );
        assert_eq!(
            Start::from_checkpoint(Some(7), &StartPosition::default()),
            Start::After(7)
        );
    }

    #[test]
    fn a_consumer_made_from_the_same_definition_is_used_as_it_is() {
        let want = config(
            "c",
            &split("orders.eu"),
            &Start::After(10),
            Acks::AfterCheckpoint,
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(judge_settings(&live(&want), &want), Verdict::Use);
    }

    #[test]
    fn settings_that_cannot_change_in_place_recreate_and_the_others_update() {
        let want = config(
            "c",
            &split("orders.eu"),
            &Start::After(10),
            Acks::AfterCheckpoint,
            Duration::from_secs(1),
        )
        .unwrap();
        // A consumer kept on disk (what an older operator made): JetStream refuses to change
        // its storage type (error 10012), so it must be made again.
        let mut on_disk = live(&want);
        on_disk.memory_storage = false;
        assert!(matches!(
            judge_settings(&on_disk, &want),
            Verdict::Recreate(_)
        ));
        let mut other_filter = live(&want);
        other_filter.filter_subject = "orders.us".into();
        assert!(matches!(
            judge_settings(&other_filter, &want),
            Verdict::Recreate(_)
        ));
        // A new checkpoint interval changes the ack wait: updated in place.
        let mut old_interval = live(&want);
        old_interval.ack_wait = Duration::from_secs(40);
        assert_eq!(judge_settings(&old_interval, &want), Verdict::Update);
        let update = update_of(&old_interval, &want);
        assert_eq!(update.deliver_policy, old_interval.deliver_policy);
        assert_eq!(update.ack_wait, want.ack_wait);
        // A consumer made before consumers had an inactivity threshold gets one in place.
        let mut forever = live(&want);
        forever.inactive_threshold = Duration::ZERO;
        assert_eq!(judge_settings(&forever, &want), Verdict::Update);
    }
}
