//! Validation of a Pipeline before anything is built: the spec itself (the same checks as the
//! CRD's CEL rules and more), the jq steps compiled with the worker's own compiler, the
//! referenced streams, where the outputs and dead letters go against the streams' subjects
//! (`jetflow_crds::routing`), and the sink stream's duplicate window against the checkpoint
//! interval.
//!
//! Pure: what was learned from NATS comes in as [`Facts`]. The result separates errors (the
//! pipeline cannot run) from warnings (it runs, with a weaker guarantee).

use std::time::Duration;

use jetflow_crds::Pipeline;
use jetflow_crds::routing::{StreamSubjects, Streams};

use crate::reasons;

/// What the operator found in JetStream for the streams a pipeline names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    /// Whether the source stream exists (JetStream source only).
    pub source_stream_exists: Option<bool>,
    /// The source stream's retention when it is not `Limits` (`"WorkQueue"`, `"Interest"`):
    /// jetflow does not read those.
    pub source_retention_unsupported: Option<&'static str>,
    /// The sink stream's duplicate window, `Some(None)` when it does not exist (JetStream sink
    /// only).
    pub sink_duplicate_window: Option<Option<Duration>>,
    /// The source stream's subjects, when it exists.
    pub source_subjects: Option<StreamSubjects>,
    /// The sink stream's subjects, when it exists.
    pub sink_subjects: Option<StreamSubjects>,
}

/// One finding, with the condition reason that reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// Condition reason, PascalCase.
    pub reason: &'static str,
    /// What is wrong and what to do, for people.
    pub message: String,
}

/// All findings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// The pipeline cannot run.
    pub errors: Vec<Finding>,
    /// The pipeline runs, but something weakens it.
    pub warnings: Vec<Finding>,
}

impl Verdict {
    /// Whether only a change of the Pipeline can fix the errors (no point in retrying): the
    /// spec or a step is invalid. A missing stream may appear later, so that is retried.
    pub fn needs_spec_change(&self) -> bool {
        self.errors
            .iter()
            .any(|f| f.reason == reasons::INVALID_SPEC || f.reason == reasons::INVALID_STEP)
    }

    /// Whether the SpecValid condition is false: the spec or a step is invalid, or the outputs
    /// or dead letters go where they must not against the streams as they are (retried: a
    /// Stream's subjects may change too).
    pub fn spec_invalid(&self) -> bool {
        self.needs_spec_change()
            || self
                .errors
                .iter()
                .any(|f| f.reason == reasons::INVALID_ROUTING)
    }

    /// The errors' messages joined, for a condition.
    pub fn error_message(&self) -> String {
        join(&self.errors)
    }

    /// The first error's reason.
    pub fn error_reason(&self) -> Option<&'static str> {
        self.errors.first().map(|f| f.reason)
    }
}

/// Joins findings' messages.
pub fn join(findings: &[Finding]) -> String {
    findings
        .iter()
        .map(|f| f.message.as_str())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The smallest duplicate window that covers a replay after a crash: everything since the last
/// checkpoint (one interval) is published again while the restarted worker catches up, so two
/// intervals plus a minute for the restart itself.
pub fn required_duplicate_window(interval: Duration) -> Duration {
    interval * 2 + Duration::from_secs(60)
}

/// Validates `p` against what was found in NATS.
pub fn validate(p: &Pipeline, facts: &Facts) -> Verdict {
    let mut v = Verdict::default();
    if let Err(invalid) = jetflow_crds::validate::pipeline(p) {
        v.errors.push(Finding {
            reason: reasons::INVALID_SPEC,
            message: invalid.to_string(),
        });
    }
    if let Err(e) = jetflow_steps::check(&p.spec.steps) {
        v.errors.push(Finding {
            reason: reasons::INVALID_STEP,
            message: e.to_string(),
        });
    }
    if let Some(js) = &p.spec.source.jetstream
        && facts.source_stream_exists == Some(false)
    {
        v.errors.push(Finding {
            reason: reasons::SOURCE_STREAM_NOT_FOUND,
            message: format!(
                "spec.source.jetstream.stream: stream {} does not exist; create it (a Stream resource) and the pipeline starts",
                js.stream
            ),
        });
    }
    if let (Some(js), Some(retention)) =
        (&p.spec.source.jetstream, facts.source_retention_unsupported)
    {
        v.errors.push(Finding {
            reason: reasons::UNSUPPORTED_SOURCE_RETENTION,
            message: jetflow_nats::stream::UnsupportedRetention {
                stream: js.stream.clone(),
                retention,
            }
            .to_string(),
        });
    }
    let routing = jetflow_crds::routing::check_streams(
        p,
        Streams {
            source: facts.source_subjects.as_ref(),
            sink: facts.sink_subjects.as_ref(),
        },
    );
    if !routing.is_empty() {
        // A Stream's subjects may change as well as the Pipeline: retried, not a spec change.
        v.errors.push(Finding {
            reason: reasons::INVALID_ROUTING,
            message: jetflow_crds::validate::Invalid(routing).to_string(),
        });
    }
    if let Some(sink) = &p.spec.sink.jetstream {
        match facts.sink_duplicate_window {
            Some(None) => v.errors.push(Finding {
                reason: reasons::SINK_STREAM_NOT_FOUND,
                message: format!(
                    "spec.sink.jetstream.stream: stream {} does not exist; create it (a Stream resource) and the pipeline starts",
                    sink.stream
                ),
            }),
            Some(Some(window)) => {
                let interval = p.spec.checkpoint.interval.get();
                let needed = required_duplicate_window(interval);
                if window < needed {
                    v.warnings.push(Finding {
                        reason: reasons::DUPLICATE_WINDOW_TOO_SHORT,
                        message: format!(
                            "sink stream {}: duplicate window {}s is shorter than {}s (2 × checkpoint interval {} + 60s); outputs replayed after a crash may be written twice — raise the stream's duplicateWindow or shorten spec.checkpoint.interval",
                            sink.stream,
                            window.as_secs(),
                            needed.as_secs(),
                            p.spec.checkpoint.interval
                        ),
                    });
                }
            }
            None => {}
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::fixtures;

    fn facts(window: u64) -> Facts {
        Facts {
            source_stream_exists: Some(true),
            sink_duplicate_window: Some(Some(Duration::from_secs(window))),
            ..Facts::default()
        }
    }

    #[test]
    fn a_valid_pipeline_has_no_findings() {
        assert_eq!(
            validate(&fixtures::pipeline(), &facts(120)),
            Verdict::default()
        );
    }

    #[test]
    fn an_invalid_field_needs_a_spec_change() {
        let mut p = fixtures::pipeline();
        p.spec.source.jetstream.as_mut().unwrap().filter_subjects = vec!["orders..x".into()];
        let v = validate(&p, &facts(120));
        assert_eq!(v.error_reason(), Some(reasons::INVALID_SPEC));
        assert!(
            v.error_message()
                .contains("spec.source.jetstream.filterSubjects[0]")
        );
        assert!(v.needs_spec_change());
    }

    #[test]
    fn overlapping_filter_subjects_need_a_spec_change() {
        let mut p = fixtures::pipeline();
        p.spec.source.jetstream.as_mut().unwrap().filter_subjects =
            vec!["orders.>".into(), "orders.eu.>".into()];
        let v = validate(&p, &facts(120));
        assert_eq!(v.error_reason(), Some(reasons::INVALID_SPEC));
        let message = v.error_message();
        for part in [
            "spec.source.jetstream.filterSubjects",
            "\"orders.>\"",
            "\"orders.eu.>\"",
        ] {
            assert!(message.contains(part), "{message}");
        }
        assert!(v.needs_spec_change());
    }

    #[test]
    fn missing_streams_are_errors_that_are_retried() {
        let v = validate(
            &fixtures::pipeline(),
            &Facts {
                source_stream_exists: Some(false),
                sink_duplicate_window: Some(None),
                ..Facts::default()
            },
        );
        let reasons: Vec<_> = v.errors.iter().map(|f| f.reason).collect();
        assert_eq!(
            reasons,
            vec![
                reasons::SOURCE_STREAM_NOT_FOUND,
                reasons::SINK_STREAM_NOT_FOUND
            ]
        );
        assert!(!v.needs_spec_change());
    }

    #[test]
    fn a_source_stream_without_limits_retention_is_refused_and_retried() {
        for retention in ["WorkQueue", "Interest"] {
            let v = validate(
                &fixtures::pipeline(),
                &Facts {
                    source_retention_unsupported: Some(retention),
                    ..facts(120)
                },
            );
            assert_eq!(
                v.error_reason(),
                Some(reasons::UNSUPPORTED_SOURCE_RETENTION)
            );
            let message = v.error_message();
            assert!(
                message.starts_with("spec.source.jetstream.stream: stream "),
                "{message}"
            );
            assert!(
                message.contains(&format!("has {retention} retention")),
                "{message}"
            );
            // The stream may be recreated with Limits retention: retried, not a spec change.
            assert!(!v.needs_spec_change());
        }
    }

    fn subjects(name: &str, subjects: &[&str]) -> Option<StreamSubjects> {
        Some(StreamSubjects {
            name: name.into(),
            subjects: subjects.iter().map(|s| (*s).to_owned()).collect(),
            stores_as_captured: true,
        })
    }

    #[test]
    fn outputs_the_sink_stream_does_not_capture_are_refused_naming_the_streams() {
        let mut p = fixtures::pipeline();
        p.spec.sink.jetstream.as_mut().unwrap().subject = "archive.{{subject}}".into();
        let facts = Facts {
            source_subjects: subjects("ORDERS", &["orders.>"]),
            sink_subjects: subjects("ORDERS_COPY", &["copy.>"]),
            ..facts(120)
        };
        let v = validate(&p, &facts);
        assert_eq!(v.error_reason(), Some(reasons::INVALID_ROUTING));
        let message = v.error_message();
        for part in [
            "spec.sink.jetstream.subject",
            "archive.orders.eu",
            "sink stream ORDERS_COPY (subjects copy.>) does not capture",
        ] {
            assert!(message.contains(part), "{part}: {message}");
        }
        assert!(!v.needs_spec_change());
        assert!(v.spec_invalid());
        // The fixture's own subject, copy.{{subject}}, is captured.
        assert_eq!(validate(&fixtures::pipeline(), &facts), Verdict::default());
    }

    #[test]
    fn the_default_sink_subject_is_an_invalid_spec() {
        let mut p = fixtures::pipeline();
        p.spec.steps.clear();
        p.spec.sink.jetstream.as_mut().unwrap().subject = "{{subject}}".into();
        let v = validate(&p, &facts(120));
        assert_eq!(v.error_reason(), Some(reasons::INVALID_SPEC));
        assert!(
            v.error_message()
                .starts_with("spec.sink.jetstream.subject: {{subject}} (the default)"),
            "{}",
            v.error_message()
        );
        assert!(v.needs_spec_change());
    }

    #[test]
    fn a_short_duplicate_window_is_a_warning() {
        // Interval 5s needs 70s.
        let v = validate(&fixtures::pipeline(), &facts(30));
        assert!(v.errors.is_empty());
        assert_eq!(v.warnings[0].reason, reasons::DUPLICATE_WINDOW_TOO_SHORT);
        assert!(
            validate(&fixtures::pipeline(), &facts(70))
                .warnings
                .is_empty()
        );
    }
}
