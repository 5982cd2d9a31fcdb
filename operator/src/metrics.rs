//! The operator's Prometheus metrics, one registry served at `/metrics`.
//!
//! | metric | type | labels | meaning |
//! | --- | --- | --- | --- |
//! | `jetflow_operator_reconciles_total` | counter | `controller` | reconciles run |
//! | `jetflow_operator_reconcile_errors_total` | counter | `controller`, `category` | reconciles that failed, by [`crate::Error::category`] (`invalid_spec` for a spec reported in a condition) |
//! | `jetflow_operator_reconcile_duration_seconds` | histogram | `controller` | time per reconcile |
//! | `jetflow_operator_leader` | gauge | | 1 while this replica holds the leader Lease |
//!
//! Labels are fixed strings (controller names, error categories), never text from objects, so
//! the number of series stays bounded.

use std::time::Instant;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

/// The operator's metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    reconciles: IntCounterVec,
    errors: IntCounterVec,
    duration: HistogramVec,
    /// 1 while this replica leads.
    pub leader: IntGauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers the metrics in a fresh registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        let reconciles = IntCounterVec::new(
            Opts::new("jetflow_operator_reconciles_total", "Reconciles run."),
            &["controller"],
        )
        .expect("valid metric");
        let errors = IntCounterVec::new(
            Opts::new(
                "jetflow_operator_reconcile_errors_total",
                "Reconciles that failed, by error category.",
            ),
            &["controller", "category"],
        )
        .expect("valid metric");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "jetflow_operator_reconcile_duration_seconds",
                "Time spent per reconcile.",
            )
            .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
            &["controller"],
        )
        .expect("valid metric");
        let leader = IntGauge::new(
            "jetflow_operator_leader",
            "1 while this operator replica holds the leader Lease.",
        )
        .expect("valid metric");
        for collector in [
            Box::new(reconciles.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(errors.clone()),
            Box::new(duration.clone()),
            Box::new(leader.clone()),
        ] {
            registry
                .register(collector)
                .expect("metric registered once");
        }
        Self {
            registry,
            reconciles,
            errors,
            duration,
            leader,
        }
    }

    /// Counts a reconcile of `controller` and returns a guard that records its duration when
    /// dropped.
    pub fn reconcile(&self, controller: &'static str) -> ReconcileTimer {
        self.reconciles.with_label_values(&[controller]).inc();
        ReconcileTimer {
            histogram: self.duration.with_label_values(&[controller]),
            start: Instant::now(),
        }
    }

    /// Counts a failed reconcile.
    pub fn error(&self, controller: &'static str, category: &'static str) {
        self.errors.with_label_values(&[controller, category]).inc();
    }

    /// The count of reconciles of `controller`.
    pub fn reconciles_of(&self, controller: &str) -> u64 {
        self.reconciles.with_label_values(&[controller]).get()
    }

    /// The count of failed reconciles of `controller` in `category`.
    pub fn errors_of(&self, controller: &str, category: &str) -> u64 {
        self.errors.with_label_values(&[controller, category]).get()
    }

    /// The metrics in Prometheus' text format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        let encoder = TextEncoder::new();
        // Encoding into a Vec only fails on metric families that cannot exist here.
        let _ = encoder.encode(&self.registry.gather(), &mut buffer);
        String::from_utf8(buffer).unwrap_or_default()
    }
}

/// Records a reconcile's duration when dropped.
pub struct ReconcileTimer {
    histogram: prometheus::Histogram,
    start: Instant,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}
