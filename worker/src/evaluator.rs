//! Step evaluation for one split, on a thread of its own, with a time budget per message.
//!
//! ```text
//!  split task ──a batch of messages──▶ evaluator thread: Steps::apply, one after another
//!      ▲          (shared, not copied)           │
//!      └──────── one outcome per message ────────┘   each awaited at most `budget`
//! ```
//!
//! The thread gets the split task's messages themselves (`Arc<SourceMessage>`): nothing of a
//! message is copied to evaluate it, and a batch the split received is handed over at once.
//!
//! A jq evaluation cannot be interrupted from outside: an expression that never ends
//! (`def f: f; f`) or builds a huge value (`[range(1e12)]`) keeps its thread busy. So the split
//! task never runs the steps itself: it waits for each message's outcome at most the budget
//! (`--step-timeout`). Past it the message fails with kind `timeout` (the pipeline's error
//! policy decides where it goes, as for any failed message), the busy thread is abandoned, and
//! the messages after it go to a new thread. The split, its snapshots and every other split go
//! on. An abandoned thread ends when its evaluation does; until then it is counted in
//! `jetflow_worker_runaway_evaluations` (only a restart of the worker ends one that never
//! finishes).
//!
//! Shutdown: dropping the evaluator closes its thread's job channel; the thread ends after the
//! message it is evaluating.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_nats::HeaderMap;
use jetflow_steps::{FailureKind, Headers, Input, Output, StepFailure, Steps};
use prometheus::IntGauge;
use tokio::sync::mpsc;

use crate::source::SourceMessage;

/// The stack of an evaluator thread: jq recursion is deep before it is endless.
const STACK_SIZE: usize = 8 * 1024 * 1024;

/// A message to evaluate, with its id in the evaluator's order.
type Job = (u64, Arc<SourceMessage>);

/// One message's outcome: its outputs, or why it failed.
pub type Outcome = Result<Vec<Output>, StepFailure>;

/// A running evaluator thread, seen from the split task.
struct Thread {
    jobs: std::sync::mpsc::Sender<Vec<Job>>,
    results: mpsc::UnboundedReceiver<(u64, Outcome)>,
    /// The index of the step the thread runs now.
    current: Arc<AtomicUsize>,
    abandoned: Arc<AtomicBool>,
}

/// Runs one split's steps off its task, with a time budget per message.
pub struct Evaluator {
    steps: Arc<Steps>,
    budget: Duration,
    split: String,
    runaway: IntGauge,
    thread: Option<Thread>,
    /// Submitted messages whose outcome was not taken yet, oldest first, with their ids.
    pending: VecDeque<Job>,
    next_id: u64,
}

impl Evaluator {
    /// An evaluator of `steps` for `split`, allowing each message `budget`; abandoned
    /// evaluations still running are counted in `runaway`.
    pub fn new(steps: Arc<Steps>, budget: Duration, split: &str, runaway: IntGauge) -> Self {
        Self {
            steps,
            budget,
            split: split.to_owned(),
            runaway,
            thread: None,
            pending: VecDeque::new(),
            next_id: 0,
        }
    }

    /// Queues messages for evaluation, handed to the thread at once; outcomes come from
    /// [`Evaluator::next`] in order.
    pub fn submit<'m>(&mut self, messages: impl IntoIterator<Item = &'m Arc<SourceMessage>>) {
        let first = self.pending.len();
        for message in messages {
            self.pending.push_back((self.next_id, Arc::clone(message)));
            self.next_id += 1;
        }
        if self.pending.len() == first {
            return;
        }
        let batch = self.pending.range(first..).cloned().collect();
        let sent = self.thread().jobs.send(batch).is_ok();
        if !sent {
            self.restart();
        }
    }

    /// The outcome of the oldest queued message; `None` when nothing is queued.
    pub async fn next(&mut self) -> Option<Outcome> {
        let (id, job) = self.pending.front()?.clone();
        let budget = self.budget;
        loop {
            let thread = self.thread();
            match tokio::time::timeout(budget, thread.results.recv()).await {
                // An outcome of a message dropped by `discard`: not this one.
                Ok(Some((done, _))) if done != id => continue,
                Ok(Some((_, outcome))) => {
                    self.pending.pop_front();
                    return Some(outcome);
                }
                Ok(None) => {
                    // The thread ended without an outcome: the steps panicked on this message.
                    self.pending.pop_front();
                    self.restart();
                    return Some(Err(self.failure(
                        0,
                        FailureKind::Eval,
                        "the steps failed unexpectedly on this message".to_owned(),
                    )));
                }
                Err(_) => {
                    let step = thread.current.load(Ordering::Relaxed);
                    let abandoned = thread.abandoned.clone();
                    // Counted before the thread can see the mark (it uncounts itself at its end).
                    self.runaway.inc();
                    abandoned.store(true, Ordering::Release);
                    tracing::warn!(
                        split = %self.split,
                        seq = job.seq,
                        step,
                        budget = ?self.budget,
                        runaway = self.runaway.get(),
                        "the steps overran their time budget on a message; its evaluation is abandoned and the message goes to the error policy"
                    );
                    self.pending.pop_front();
                    self.restart();
                    return Some(Err(self.failure(
                        step,
                        FailureKind::Timeout,
                        format!(
                            "the steps did not finish within {:?} (--step-timeout)",
                            self.budget
                        ),
                    )));
                }
            }
        }
    }

    /// Forgets every queued message (the split stopped taking them); the thread that has them
    /// queued is let go, and ends after the message it is evaluating.
    pub fn discard(&mut self) {
        if !self.pending.is_empty() {
            self.pending.clear();
            self.thread = None;
        }
    }

    fn failure(&self, index: usize, kind: FailureKind, message: String) -> StepFailure {
        let name = self.steps.names().nth(index).unwrap_or("steps").to_owned();
        StepFailure {
            index,
            name,
            kind,
            message,
        }
    }

    fn thread(&mut self) -> &mut Thread {
        self.thread
            .get_or_insert_with(|| spawn(self.steps.clone(), &self.split, self.runaway.clone()))
    }

    /// Replaces the thread, and hands it every message still queued.
    fn restart(&mut self) {
        self.thread = None;
        let pending: Vec<_> = self.pending.iter().cloned().collect();
        let thread = self.thread();
        if !pending.is_empty() {
            // A thread that ends at once is noticed by `next`.
            let _ = thread.jobs.send(pending);
        }
    }
}

/// Runs the steps over one message, storing in `current` the index of the step that runs. The
/// message's headers are converted for the steps only when a step uses them.
pub(crate) fn evaluate(steps: &Steps, message: &SourceMessage, current: &AtomicUsize) -> Outcome {
    let headers = if steps.uses_headers() {
        message.headers.as_ref().map(step_headers)
    } else {
        None
    };
    let input = Input {
        subject: &message.subject,
        headers: headers.as_ref(),
        payload: &message.payload,
        seq: message.seq,
    };
    steps.apply_observed(input, current)
}

/// NATS headers as the steps see them.
pub(crate) fn step_headers(headers: &HeaderMap) -> Headers {
    headers
        .iter()
        .flat_map(|(name, values)| {
            let name: &str = name.as_ref();
            values.iter().map(move |value| (name, value.as_str()))
        })
        .collect()
}

/// Headers the steps left, as NATS headers. Their names and values are valid NATS ones: names
/// from NATS headers or checked when the steps compiled, values from NATS headers or checked for
/// line breaks when rendered.
pub(crate) fn nats_headers(headers: &Headers) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in headers.iter() {
        map.append(name, value);
    }
    map
}

fn spawn(steps: Arc<Steps>, split: &str, runaway: IntGauge) -> Thread {
    let (jobs, jobs_rx) = std::sync::mpsc::channel::<Vec<Job>>();
    let (results_tx, results) = mpsc::unbounded_channel();
    let current = Arc::new(AtomicUsize::new(0));
    let abandoned = Arc::new(AtomicBool::new(false));
    let (step, gone) = (current.clone(), abandoned.clone());
    let spawned = std::thread::Builder::new()
        .name(format!("steps-{split}"))
        .stack_size(STACK_SIZE)
        .spawn(move || {
            'batches: while let Ok(batch) = jobs_rx.recv() {
                for (id, message) in batch {
                    let outcome = evaluate(&steps, &message, &step);
                    if results_tx.send((id, outcome)).is_err() {
                        break 'batches;
                    }
                }
            }
            if gone.load(Ordering::Acquire) {
                runaway.dec();
            }
        });
    if let Err(e) = spawned {
        // Without a thread every message fails (kind eval) and goes to the error policy.
        tracing::error!(split, error = %e, "cannot start a thread for the steps");
    }
    Thread {
        jobs,
        results,
        current,
        abandoned,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jetflow_crds::pipeline::Step;

    fn steps(map: &str) -> Arc<Steps> {
        let step: Step =
            serde_json::from_value(serde_json::json!({"name": "m", "map": map})).expect("step");
        Arc::new(Steps::compile(&[step]).expect("compiles"))
    }

    fn message(payload: &str, seq: u64) -> Arc<SourceMessage> {
        Arc::new(SourceMessage {
            subject: async_nats::Subject::from("in.x"),
            headers: None,
            payload: bytes::Bytes::copy_from_slice(payload.as_bytes()),
            seq,
            ack: Default::default(),
            stream: Default::default(),
        })
    }

    #[tokio::test]
    async fn a_runaway_message_times_out_and_the_next_ones_are_evaluated() {
        let runaway = IntGauge::new("runaway", "help").unwrap();
        let mut e = Evaluator::new(
            steps("if .n == 2 then (def f: f; f) else .n end"),
            Duration::from_millis(300),
            "s",
            runaway.clone(),
        );
        let messages: Vec<_> = (1..=3)
            .map(|n| message(&format!(r#"{{"n": {n}}}"#), n))
            .collect();
        e.submit(&messages);
        assert_eq!(e.next().await.unwrap().unwrap()[0].payload, "1");
        let failed = e.next().await.unwrap().unwrap_err();
        assert_eq!(
            (failed.kind, failed.name.as_str()),
            (FailureKind::Timeout, "m")
        );
        assert_eq!(runaway.get(), 1);
        assert_eq!(e.next().await.unwrap().unwrap()[0].payload, "3");
        assert!(e.next().await.is_none());
    }

    #[test]
    fn headers_convert_both_ways_keeping_every_value() {
        let mut nats = HeaderMap::new();
        nats.insert("Trace", "t-1");
        nats.append("Multi", "1");
        nats.append("Multi", "2");
        let steps = step_headers(&nats);
        assert_eq!(steps.len(), 3);
        assert_eq!(steps.get_all("Multi").collect::<Vec<_>>(), ["1", "2"]);
        assert_eq!(nats_headers(&steps), nats);
    }
}
