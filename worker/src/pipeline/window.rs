//! Exactly once across a long outage: a split resumed after its last commit has grown older
//! than the sink stream's duplicate window.
//!
//! Exactly once to a JetStream sink rests on the sink's duplicate window: a split resumed from
//! its checkpoint replays what it emitted after its last commit, under the same message ids,
//! and the sink drops those it still remembers. It remembers an id for its `duplicate_window`
//! only, so after a worker was down longer than that (a crash loop, a lost node, a long stop
//! with outputs not yet committed) the replay writes them again.
//!
//! Before a split starts from a checkpoint entry that is not drained (the run that wrote it
//! ended without a final commit, so outputs past the position may be in the sink), the runner
//! compares the age of the last commit with the sink stream's duplicate window. The replay is
//! at risk only when both the last commit and the first source message past the position are
//! older than the window (an output is emitted after its source message was stored; a split
//! with nothing past its position has nothing to replay). Then it logs an error naming the age
//! and the window, counts `jetflow_worker_errors_total{kind="duplicate_window"}`, records the
//! finding in the checkpoint entry ([`WindowExceeded`], for the operator to show), and:
//!
//! - with `checkpoint.mode: ExactlyOnce` asked for in the spec, refuses to start the split:
//!   the split is reported stopped with how to proceed (raise the sink stream's duplicate
//!   window above the age, or set `checkpoint.mode: AtLeastOnce` for this resume);
//! - otherwise (the mode left to its default, or `AtLeastOnce`) resumes the split at least
//!   once.

use async_nats::jetstream;
use async_nats::jetstream::stream::RawMessageErrorKind;
use jetflow_crds::checkpoint::{SplitPosition, WindowExceeded};
use jetflow_crds::split::Split;

use super::Runner;
use crate::sink::Sink;

/// What the check needs: the streams, and whether exactly once was asked for.
#[derive(Clone, Debug)]
pub(super) struct WindowGuard {
    pub(super) js: jetstream::Context,
    pub(super) source: String,
    pub(super) sink: String,
    pub(super) exactly_once: bool,
    /// The sink stream's duplicate window, looked up once per run (splits start by the
    /// thousand; a window raised since is seen when the worker starts again).
    pub(super) window: std::sync::Arc<tokio::sync::OnceCell<std::time::Duration>>,
}

/// A resume at risk of writing duplicates.
struct Risk {
    exceeded: WindowExceeded,
    /// Why the split was not started, with how to proceed (when it was refused).
    reason: Option<String>,
}

fn timestamp(time: async_nats::datetime::DateTime) -> jiff::Timestamp {
    jiff::Timestamp::from_nanosecond(time.unix_timestamp_nanos()).unwrap_or_default()
}

impl WindowGuard {
    /// Whether resuming `split` from `entry`, committed at `committed`, may write duplicates.
    async fn risk(
        &self,
        split: &Split,
        entry: &SplitPosition,
        committed: jiff::Timestamp,
    ) -> Option<Risk> {
        let now = jiff::Timestamp::now();
        let age = now.duration_since(committed);
        let looked_up = self
            .window
            .get_or_try_init(|| async {
                let sink = self.js.get_stream(&self.sink).await?;
                Ok::<_, async_nats::jetstream::context::GetStreamError>(
                    sink.cached_info().config.duplicate_window,
                )
            })
            .await;
        let window = match looked_up {
            Ok(window) => *window,
            Err(e) => {
                tracing::warn!(split = %split.name, stream = %self.sink, error = %e, "cannot look up the sink stream's duplicate window; the resume is not checked against it");
                return None;
            }
        };
        let window_age =
            jiff::SignedDuration::try_from(window).unwrap_or(jiff::SignedDuration::MAX);
        if age <= window_age {
            return None;
        }
        // Outputs past the position were emitted after their source message was stored.
        let source = self.js.get_stream(&self.source).await.ok()?;
        match source
            .get_first_raw_message_by_subject(&split.subject, entry.position + 1)
            .await
        {
            Ok(first) if now.duration_since(timestamp(first.time)) <= window_age => return None,
            Ok(_) => {}
            Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => return None,
            Err(e) => {
                tracing::warn!(split = %split.name, error = %e, "cannot look up the split's next message; the resume is checked by the age of its last commit alone");
            }
        }
        let age_seconds = u64::try_from(age.as_secs()).unwrap_or_default();
        let window_seconds = window.as_secs();
        let reason = self.exactly_once.then(|| {
            format!(
                "exactly once cannot hold: the split's last commit is {age_seconds}s old, older than the duplicate window of sink stream {sink} ({window_seconds}s), so outputs emitted after it would be written again; raise the stream's duplicate window above {age_seconds}s, or set spec.checkpoint.mode: AtLeastOnce to resume with duplicates",
                sink = self.sink,
            )
        });
        Some(Risk {
            exceeded: WindowExceeded {
                detected: now,
                age_seconds,
                window_seconds,
                refused: self.exactly_once,
            },
            reason,
        })
    }
}

impl<S: Sink> Runner<S> {
    /// Checks a split about to start against the sink stream's duplicate window (see the module
    /// docs); returns why it must not start, if so. A finding is logged, counted and recorded
    /// in the checkpoint either way.
    pub(super) async fn refuse_resume(&mut self, split: &Split, generation: u64) -> Option<String> {
        let guard = self.window.as_ref()?;
        let checkpoint = self.committer.checkpoint();
        let entry = checkpoint.splits.get(&split.name)?;
        let committed = checkpoint.time?;
        if entry.drained {
            return None;
        }
        let risk = guard.risk(split, entry, committed).await?;
        let sink = guard.sink.clone();
        let exceeded = &risk.exceeded;
        self.metrics.split(&split.name).error("duplicate_window");
        match &risk.reason {
            Some(reason) => tracing::error!(
                split = %split.name,
                age_seconds = exceeded.age_seconds,
                window_seconds = exceeded.window_seconds,
                sink = %sink,
                "split not started: {reason}"
            ),
            None => tracing::error!(
                split = %split.name,
                age_seconds = exceeded.age_seconds,
                window_seconds = exceeded.window_seconds,
                sink = %sink,
                "the split's last commit is older than the sink stream's duplicate window: outputs emitted after it are written again (resumed at least once; spec.checkpoint.mode: ExactlyOnce refuses such a resume)"
            ),
        }
        let record = SplitPosition {
            owner: Some(self.worker_id.clone()),
            generation,
            window_exceeded: Some(risk.exceeded.clone()),
            ..entry.clone()
        };
        let updates = std::collections::BTreeMap::from([(split.name.clone(), record)]);
        if let Err(e) = self.committer.commit_partly(&updates).await {
            tracing::warn!(split = %split.name, error = %e, "duplicate window finding not recorded in the checkpoint");
        }
        let reason = risk.reason?;
        self.held.insert(split.name.clone(), reason.clone());
        Some(reason)
    }
}
