//! The worker's Prometheus metrics, in a registry of their own (served by [`crate::http`]).
//!
//! Per-split counters are resolved once per split ([`Metrics::split`]) so that the message path
//! touches only atomics, never a label lookup. The names and labels are documented in
//! `docs/metrics.md`.

use std::time::{SystemTime, UNIX_EPOCH};

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

/// The worker's metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    messages: IntCounterVec,
    bytes: IntCounterVec,
    errors: IntCounterVec,
    lag: IntGaugeVec,
    position: IntGaugeVec,
    stopped: IntGaugeVec,
    blocked: IntGaugeVec,
    stream_recreated: IntCounterVec,
    skipped: IntCounterVec,
    /// Messages the NATS client dropped because a subscription's buffer was full (a NATS
    /// Core split that does not keep up), as the client reports them.
    pub dropped_slow_consumer: IntCounter,
    /// Time from a checkpoint's barrier to the source acknowledgement.
    pub checkpoint_duration: Histogram,
    /// Unix time of the last committed checkpoint.
    pub last_checkpoint: Gauge,
    seconds_since_checkpoint: Gauge,
    /// Id of the last committed checkpoint.
    pub checkpoint_id: IntGauge,
    /// Checkpoints that failed (store or sink).
    pub checkpoint_failures: IntCounter,
    /// 1 while reading is paused because checkpoints fail (back-pressure).
    pub reading_paused: IntGauge,
    runaway_evaluations: IntGauge,
}

/// One split's metric handles.
#[derive(Clone)]
pub struct SplitMetrics {
    /// Messages read from the source.
    pub messages_in: IntCounter,
    /// Messages confirmed by the sink.
    pub messages_out: IntCounter,
    /// Payload bytes read.
    pub bytes_in: IntCounter,
    /// Payload bytes written.
    pub bytes_out: IntCounter,
    /// Messages after the split's read position still in the stream.
    pub lag: IntGauge,
    /// The split's committed position.
    pub position: IntGauge,
    /// 1 when the split stopped on an error (policy `Stop`).
    pub stopped: IntGauge,
    /// 1 while the server refuses the split's consumer for a consumer limit.
    pub blocked: IntGauge,
    /// Step evaluations given up on after their budget and still running on their thread
    /// (shared by every split).
    pub runaway_evaluations: IntGauge,
    /// Times the split found its source stream deleted and created again.
    pub stream_recreated: IntCounter,
    /// Stream sequences the split never read because the stream's retention removed them.
    pub skipped_retention: IntCounter,
    /// Dead letters replayed for another pipeline (`Jetflow-Replay-For`), skipped.
    pub skipped_replay: IntCounter,
    errors: IntCounterVec,
    split: String,
}

impl SplitMetrics {
    /// Counts an error of `kind` (a stable category).
    pub fn error(&self, kind: &str) {
        self.errors.with_label_values(&[&self.split, kind]).inc();
    }
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition")
}

fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric definition")
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers the metrics.
    pub fn new() -> Self {
        let registry = Registry::new();
        let messages = counter_vec(
            "jetflow_worker_messages_total",
            "Messages read from the source (direction=in) and confirmed by the sink (direction=out), per split.",
            &["split", "direction"],
        );
        let bytes = counter_vec(
            "jetflow_worker_bytes_total",
            "Payload bytes read from the source (in) and confirmed by the sink (out), per split.",
            &["split", "direction"],
        );
        let errors = counter_vec(
            "jetflow_worker_errors_total",
            "Errors per split and kind.",
            &["split", "kind"],
        );
        let lag = gauge_vec(
            "jetflow_worker_split_lag",
            "Messages in the stream after the split's read position (the consumer's pending count).",
            &["split"],
        );
        let position = gauge_vec(
            "jetflow_worker_split_position",
            "The split's last committed position (stream sequence).",
            &["split"],
        );
        let stopped = gauge_vec(
            "jetflow_worker_split_stopped",
            "1 when the split stopped on a failed message (error policy Stop).",
            &["split"],
        );
        let blocked = gauge_vec(
            "jetflow_worker_split_blocked",
            "1 while the split cannot open because the server refuses its consumer for a consumer limit (the stream's max_consumers or the account's).",
            &["split"],
        );
        let stream_recreated = counter_vec(
            "jetflow_worker_source_stream_recreated_total",
            "Times the split found its source stream deleted and created again (positions started anew at the new stream's start).",
            &["split"],
        );
        let skipped = counter_vec(
            "jetflow_worker_skipped_messages_total",
            "Source messages the split never read, by reason (retention: stream sequences the stream's retention removed before the split read them; replay_for_other: dead letters `kubectl jetflow dlq replay` republished for another pipeline, read and skipped).",
            &["split", "reason"],
        );
        let dropped = counter_vec(
            "jetflow_worker_dropped_total",
            "Messages dropped before the worker read them, by reason (slow_consumer: the NATS client's subscription buffer of a NATS Core split was full).",
            &["reason"],
        );
        let dropped_slow_consumer = dropped.with_label_values(&["slow_consumer"]);
        let checkpoint_duration = Histogram::with_opts(
            HistogramOpts::new(
                "jetflow_worker_checkpoint_duration_seconds",
                "Time from a checkpoint's barrier to the acknowledgement of the source.",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
        )
        .expect("valid metric definition");
        let last_checkpoint = Gauge::new(
            "jetflow_worker_last_checkpoint_timestamp_seconds",
            "Unix time of the last committed checkpoint.",
        )
        .expect("valid metric definition");
        let seconds_since_checkpoint = Gauge::new(
            "jetflow_worker_seconds_since_last_checkpoint",
            "Seconds since the last committed checkpoint (since start when none).",
        )
        .expect("valid metric definition");
        let checkpoint_id = IntGauge::new(
            "jetflow_worker_checkpoint_id",
            "Id of the last committed checkpoint.",
        )
        .expect("valid metric definition");
        let checkpoint_failures = IntCounter::new(
            "jetflow_worker_checkpoint_failures_total",
            "Checkpoints that could not be completed.",
        )
        .expect("valid metric definition");
        let reading_paused = IntGauge::new(
            "jetflow_worker_reading_paused",
            "1 while the worker has stopped reading because its checkpoints fail (back-pressure).",
        )
        .expect("valid metric definition");
        let runaway_evaluations = IntGauge::new(
            "jetflow_worker_runaway_evaluations",
            "Step evaluations given up on after their time budget that are still running.",
        )
        .expect("valid metric definition");
        for c in [
            Box::new(messages.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(reading_paused.clone()),
            Box::new(runaway_evaluations.clone()),
            Box::new(bytes.clone()),
            Box::new(errors.clone()),
            Box::new(lag.clone()),
            Box::new(position.clone()),
            Box::new(stopped.clone()),
            Box::new(blocked.clone()),
            Box::new(stream_recreated.clone()),
            Box::new(skipped.clone()),
            Box::new(dropped.clone()),
            Box::new(checkpoint_duration.clone()),
            Box::new(last_checkpoint.clone()),
            Box::new(seconds_since_checkpoint.clone()),
            Box::new(checkpoint_id.clone()),
            Box::new(checkpoint_failures.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        last_checkpoint.set(now_seconds());
        Self {
            registry,
            messages,
            bytes,
            errors,
            lag,
            position,
            stopped,
            blocked,
            stream_recreated,
            skipped,
            dropped_slow_consumer,
            checkpoint_duration,
            last_checkpoint,
            seconds_since_checkpoint,
            checkpoint_id,
            checkpoint_failures,
            reading_paused,
            runaway_evaluations,
        }
    }

    /// The handles of one split.
    pub fn split(&self, split: &str) -> SplitMetrics {
        SplitMetrics {
            messages_in: self.messages.with_label_values(&[split, "in"]),
            messages_out: self.messages.with_label_values(&[split, "out"]),
            bytes_in: self.bytes.with_label_values(&[split, "in"]),
            bytes_out: self.bytes.with_label_values(&[split, "out"]),
            lag: self.lag.with_label_values(&[split]),
            position: self.position.with_label_values(&[split]),
            stopped: self.stopped.with_label_values(&[split]),
            blocked: self.blocked.with_label_values(&[split]),
            runaway_evaluations: self.runaway_evaluations.clone(),
            stream_recreated: self.stream_recreated.with_label_values(&[split]),
            skipped_retention: self.skipped.with_label_values(&[split, "retention"]),
            skipped_replay: self.skipped.with_label_values(&[split, "replay_for_other"]),
            errors: self.errors.clone(),
            split: split.to_owned(),
        }
    }

    /// Forgets a split's gauges (it moved to another worker or was retired); counters stay.
    pub fn remove_split(&self, split: &str) {
        let _ = self.lag.remove_label_values(&[split]);
        let _ = self.position.remove_label_values(&[split]);
        let _ = self.stopped.remove_label_values(&[split]);
        let _ = self.blocked.remove_label_values(&[split]);
    }

    /// Records a committed checkpoint.
    pub fn checkpoint_committed(&self, id: u64) {
        self.last_checkpoint.set(now_seconds());
        self.checkpoint_id
            .set(i64::try_from(id).unwrap_or(i64::MAX));
    }

    /// The registry, for a caller that serves more metrics beside these.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Every metric in the Prometheus text format.
    pub fn encode(&self) -> String {
        self.seconds_since_checkpoint
            .set((now_seconds() - self.last_checkpoint.get()).max(0.0));
        let mut buf = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(e) = encoder.encode(&self.registry.gather(), &mut buf) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

fn now_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_counters_appear_with_their_labels() {
        let m = Metrics::new();
        let s = m.split("orders.>");
        s.messages_in.inc_by(3);
        s.error("step_parse");
        m.checkpoint_committed(7);
        let text = m.encode();
        assert!(
            text.contains(r#"jetflow_worker_messages_total{direction="in",split="orders.>"} 3"#),
            "{text}"
        );
        assert!(
            text.contains(r#"jetflow_worker_errors_total{kind="step_parse",split="orders.>"} 1"#),
            "{text}"
        );
        assert!(text.contains("jetflow_worker_checkpoint_id 7"), "{text}");
        assert!(text.contains("jetflow_worker_seconds_since_last_checkpoint"));
    }
}
