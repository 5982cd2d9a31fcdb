//! Rust-side validation of Pipelines and Streams, called by the operator before it acts and by
//! the worker before it moves a message. It checks what the CRD's CEL rules check, so that a
//! manifest run locally fails the same way, and more that CEL cannot express well (NATS subject
//! syntax, subject templates). Every error names the field.
//!
//! Compiling jq steps is not done here (this crate does not depend on jq); the steps crate
//! adds that check.

use std::fmt;

use crate::connection::Connection;
use crate::pipeline::{PipelineSpec, StartFrom};
use crate::stream::{DeletionPolicy, StreamMode, StreamSpec};
use crate::{Pipeline, Stream};

/// The most filter subjects a JetStream source may have (the CRD's `maxItems`, which keeps the
/// cost of its pairwise CEL rule small).
pub const MAX_FILTER_SUBJECTS: usize = 100;
/// The longest filter subject (the CRD's `maxLength`).
pub const MAX_FILTER_LENGTH: usize = 512;

/// One invalid field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Path of the field, such as `spec.steps[2].map`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// All invalid fields of a resource; never empty.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct Invalid(pub Vec<FieldError>);

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join("; "))
    }
}

#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }

    fn subject(&mut self, field: String, subject: &str, wildcards: bool) {
        if let Err(message) = check_subject(subject, wildcards) {
            self.add(field, message);
        }
    }

    fn finish(self) -> Result<(), Invalid> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Invalid(self.0))
        }
    }
}

/// Checks a NATS subject: dot-separated non-empty tokens without whitespace; with `wildcards`,
/// `*` as a whole token and `>` as the whole last token.
pub fn check_subject(subject: &str, wildcards: bool) -> Result<(), String> {
    if subject.is_empty() {
        return Err("subject is empty".into());
    }
    if subject.chars().any(char::is_whitespace) {
        return Err(format!("subject {subject:?} contains whitespace"));
    }
    let tokens: Vec<&str> = subject.split('.').collect();
    for (i, token) in tokens.iter().enumerate() {
        if token.is_empty() {
            return Err(format!("subject {subject:?} has an empty token"));
        }
        let wild = *token == "*" || *token == ">";
        if wild && !wildcards {
            return Err(format!("subject {subject:?} must not contain wildcards"));
        }
        if *token == ">" && i + 1 != tokens.len() {
            return Err(format!(
                "subject {subject:?}: '>' is only allowed as the last token"
            ));
        }
        if !wild && (token.contains('*') || token.contains('>')) {
            return Err(format!(
                "subject {subject:?}: wildcards must be whole tokens, as in \"orders.*\""
            ));
        }
    }
    Ok(())
}

/// Whether two valid subjects or filters match a common subject: token by token, equal tokens
/// and `*` match one token, `>` matches the rest (one token or more).
pub fn subjects_overlap(a: &str, b: &str) -> bool {
    let mut a = a.split('.');
    let mut b = b.split('.');
    loop {
        match (a.next(), b.next()) {
            (None, None) => return true,
            (Some(">"), Some(_)) | (Some(_), Some(">")) => return true,
            (Some(x), Some(y)) if x == y || x == "*" || y == "*" => {}
            _ => return false,
        }
    }
}

/// Checks a subject template: literal subject text with `{{subject}}`, `{{token(N)}}` (N ≥ 1)
/// and, where `payload` is allowed, `{{payload.path}}` placeholders.
pub fn check_subject_template(template: &str, payload: bool) -> Result<(), String> {
    let mut rest = template;
    let mut literal = String::new();
    while let Some(start) = rest.find("{{") {
        literal.push_str(&rest[..start]);
        let Some(end) = rest[start..].find("}}") else {
            return Err(format!(
                "template {template:?}: '{{{{' without a closing '}}}}'"
            ));
        };
        let inner = rest[start + 2..start + end].trim();
        let ok = inner == "subject"
            || inner
                .strip_prefix("token(")
                .and_then(|t| t.strip_suffix(')'))
                .and_then(|n| n.trim().parse::<u32>().ok())
                .is_some_and(|n| n >= 1)
            || (payload
                && inner
                    .strip_prefix("payload.")
                    .is_some_and(|p| !p.is_empty() && !p.contains(char::is_whitespace)));
        if !ok {
            let allowed = if payload {
                "{{subject}}, {{token(N)}} or {{payload.field}}"
            } else {
                "{{subject}} or {{token(N)}}"
            };
            return Err(format!(
                "template {template:?}: unknown placeholder {{{{{inner}}}}}; use {allowed}"
            ));
        }
        literal.push('x');
        rest = &rest[start + end + 2..];
    }
    literal.push_str(rest);
    if literal.contains("}}") {
        return Err(format!(
            "template {template:?}: '}}}}' without an opening '{{{{'"
        ));
    }
    check_subject(&literal, false).map_err(|e| format!("template {template:?}: {e}"))
}

/// Checks one server URL of a connection: a NATS scheme, a host, and a port that is a
/// number up to 65535 when given.
fn check_server_url(url: &str) -> Result<(), String> {
    let Some(rest) = ["nats://", "tls://", "ws://", "wss://"]
        .iter()
        .find_map(|scheme| url.strip_prefix(scheme))
    else {
        return Err("no nats://, tls://, ws:// or wss:// scheme".into());
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = match host_port.rsplit_once(':') {
        // An IPv6 address in brackets holds colons of its own.
        Some((host, port)) if !port.contains(']') => (host, Some(port)),
        _ => (host_port, None),
    };
    if host.is_empty() {
        return Err("no host".into());
    }
    if let Some(port) = port
        && port.parse::<u16>().is_err()
    {
        return Err(format!("invalid port number {port:?}"));
    }
    Ok(())
}

fn check_connection(errors: &mut Errors, field: &str, conn: &Connection) {
    let auth = [
        conn.creds.is_some(),
        conn.nkey.is_some(),
        conn.user_password.is_some(),
        conn.token.is_some(),
    ];
    if auth.iter().filter(|set| **set).count() > 1 {
        errors.add(
            field,
            "set at most one of creds, nkey, userPassword and token",
        );
    }
    if let Some(url) = &conn.url {
        let parts: Vec<&str> = url.split(',').map(str::trim).collect();
        for (i, part) in parts.iter().enumerate() {
            if let Err(reason) = check_server_url(part) {
                errors.add(
                    format!("{field}.url"),
                    format!(
                        "entry {} of {} ({:?}) is not a NATS URL (nats://host:port, tls://, ws:// or wss://): {reason}",
                        i + 1,
                        parts.len(),
                        crate::connection::redact_url(part)
                    ),
                );
            }
        }
    }
    if let Some(tls) = &conn.tls
        && tls.cert.is_some() != tls.key.is_some()
    {
        errors.add(format!("{field}.tls"), "cert and key must be set together");
    }
}

/// Validates a Pipeline's spec, and where its outputs and dead letters go as far as the spec
/// alone decides ([`crate::routing::check`]).
pub fn pipeline(p: &Pipeline) -> Result<(), Invalid> {
    let mut errors = match pipeline_spec(&p.spec) {
        Ok(()) => Vec::new(),
        Err(Invalid(errors)) => errors,
    };
    errors.extend(crate::routing::check(p));
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Invalid(errors))
    }
}

/// Validates a Pipeline spec; fields are named from `spec.`.
pub fn pipeline_spec(spec: &PipelineSpec) -> Result<(), Invalid> {
    let mut e = Errors::default();
    if let Some(conn) = &spec.connection {
        check_connection(&mut e, "spec.connection", conn);
    }

    let src = &spec.source;
    match (&src.core, &src.jetstream) {
        (Some(_), Some(_)) | (None, None) => e.add(
            "spec.source",
            "set exactly one of source.core and source.jetstream",
        ),
        _ => {}
    }
    if let Some(core) = &src.core {
        if core.subjects.is_empty() {
            e.add(
                "spec.source.core.subjects",
                "at least one subject is required",
            );
        }
        for (i, s) in core.subjects.iter().enumerate() {
            e.subject(format!("spec.source.core.subjects[{i}]"), s, true);
        }
    }
    if let Some(js) = &src.jetstream {
        if js.stream.is_empty() {
            e.add("spec.source.jetstream.stream", "a stream name is required");
        }
        for (i, s) in js.filter_subjects.iter().enumerate() {
            e.subject(
                format!("spec.source.jetstream.filterSubjects[{i}]"),
                s,
                true,
            );
        }
        if js.filter_subjects.len() > MAX_FILTER_SUBJECTS {
            e.add(
                "spec.source.jetstream.filterSubjects",
                format!("at most {MAX_FILTER_SUBJECTS} filters"),
            );
        }
        for (i, s) in js.filter_subjects.iter().enumerate() {
            if s.len() > MAX_FILTER_LENGTH {
                e.add(
                    format!("spec.source.jetstream.filterSubjects[{i}]"),
                    format!("at most {MAX_FILTER_LENGTH} characters"),
                );
            }
        }
        for (i, a) in js.filter_subjects.iter().enumerate() {
            for (j, b) in js.filter_subjects.iter().enumerate().skip(i + 1) {
                if subjects_overlap(a, b) {
                    e.add(
                        "spec.source.jetstream.filterSubjects",
                        format!(
                            "filters {a:?} ([{i}]) and {b:?} ([{j}]) overlap: a message both match would be read by two splits and written twice; keep only the wider one or make them disjoint"
                        ),
                    );
                }
            }
        }
        let start = &js.start;
        if (start.from == StartFrom::Sequence) != start.sequence.is_some() {
            e.add(
                "spec.source.jetstream.start.sequence",
                "required when start.from is Sequence, and only then",
            );
        }
        if (start.from == StartFrom::Time) != start.time.is_some() {
            e.add(
                "spec.source.jetstream.start.time",
                "required when start.from is Time, and only then",
            );
        }
        if start.sequence == Some(0) {
            e.add("spec.source.jetstream.start.sequence", "must be at least 1");
        }
        if js.batch_size == 0 {
            e.add("spec.source.jetstream.batchSize", "must be at least 1");
        }
        if js.discovery_interval.get().is_zero() {
            e.add(
                "spec.source.jetstream.discoveryInterval",
                "must be longer than 0s",
            );
        }
    }
    if let Some(bound) = &src.bound {
        if src.jetstream.is_none() {
            e.add(
                "spec.source.bound",
                "only allowed with a JetStream source (source.jetstream)",
            );
        }
        let set = [
            bound.sequence.is_some(),
            bound.time.is_some(),
            bound.stream_end == Some(true),
        ];
        if set.iter().filter(|s| **s).count() != 1 {
            e.add(
                "spec.source.bound",
                "set exactly one of sequence, time and streamEnd: true",
            );
        }
        if src
            .jetstream
            .as_ref()
            .is_some_and(|js| js.start.from == StartFrom::New)
        {
            e.add(
                "spec.source.bound",
                "cannot be combined with source.jetstream.start.from: New",
            );
        }
    }

    for (i, step) in spec.steps.iter().enumerate() {
        let field = format!("spec.steps[{i}]");
        let kinds = [
            step.filter.is_some(),
            step.map.is_some(),
            step.set_subject.is_some(),
            step.set_headers.is_some(),
            step.drop_headers.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() != 1 {
            e.add(
                &field,
                "set exactly one of filter, map, setSubject, setHeaders and dropHeaders",
            );
        }
        if let Some(t) = &step.set_subject
            && let Err(m) = check_subject_template(t, true)
        {
            e.add(format!("{field}.setSubject"), m);
        }
        for (name, value) in step.set_headers.iter().flatten() {
            if name.is_empty() || name.contains([':', ' ', '\r', '\n']) {
                e.add(
                    format!("{field}.setHeaders"),
                    format!("{name:?} is not a header name"),
                );
            }
            if value.contains(['\r', '\n']) {
                e.add(
                    format!("{field}.setHeaders.{name}"),
                    "header values must not contain line breaks",
                );
            }
        }
    }

    let sink = &spec.sink;
    match (&sink.core, &sink.jetstream) {
        (Some(_), Some(_)) | (None, None) => e.add(
            "spec.sink",
            "set exactly one of sink.core and sink.jetstream",
        ),
        _ => {}
    }
    if let Some(core) = &sink.core
        && let Err(m) = check_subject_template(&core.subject, false)
    {
        e.add("spec.sink.core.subject", m);
    }
    if let Some(js) = &sink.jetstream {
        if js.stream.is_empty() {
            e.add("spec.sink.jetstream.stream", "a stream name is required");
        }
        if let Err(m) = check_subject_template(&js.subject, false) {
            e.add("spec.sink.jetstream.subject", m);
        }
        if js.max_pending == 0 {
            e.add("spec.sink.jetstream.maxPending", "must be at least 1");
        }
    }

    if spec.checkpoint.interval.get().is_zero() {
        e.add("spec.checkpoint.interval", "must be longer than 0s");
    }
    if spec.checkpoint.mode == Some(crate::pipeline::DeliveryMode::ExactlyOnce)
        && (src.jetstream.is_none() || sink.jetstream.is_none())
    {
        e.add(
            "spec.checkpoint.mode",
            "ExactlyOnce needs a JetStream source and a JetStream sink",
        );
    }
    if let Some(dlq) = &spec.errors.dead_letter_subject {
        e.subject("spec.errors.deadLetterSubject".into(), dlq, false);
    }
    if spec.parallelism < 1 {
        e.add("spec.parallelism", "must be at least 1");
    }
    if let Some(a) = &spec.autoscaling {
        if src.jetstream.is_none() {
            e.add(
                "spec.autoscaling",
                "needs a JetStream source (source.jetstream): a NATS Core source has no lag to scale on",
            );
        }
        if a.min_parallelism < 1 {
            e.add("spec.autoscaling.minParallelism", "must be at least 1");
        }
        if a.max_parallelism < a.min_parallelism.max(1) {
            e.add(
                "spec.autoscaling.maxParallelism",
                "must be at least 1 and at least minParallelism",
            );
        }
        if a.target_lag_per_worker < 1 {
            e.add("spec.autoscaling.targetLagPerWorker", "must be at least 1");
        }
    }
    e.finish()
}

/// Validates a Stream's spec.
pub fn stream(s: &Stream) -> Result<(), Invalid> {
    stream_spec(&s.spec)
}

/// Validates a Stream spec; fields are named from `spec.`.
pub fn stream_spec(spec: &StreamSpec) -> Result<(), Invalid> {
    let mut e = Errors::default();
    if let Some(name) = &spec.name
        && (name.is_empty()
            || name.contains(['.', '*', '>', '/', '\\'])
            || name.contains(char::is_whitespace))
    {
        e.add(
            "spec.name",
            format!(
                "{name:?} is not a JetStream stream name (no dots, wildcards, slashes or spaces)"
            ),
        );
    }
    if spec.mode == StreamMode::Managed && spec.subjects.is_empty() {
        e.add("spec.subjects", "at least one subject is required");
    }
    for (i, s) in spec.subjects.iter().enumerate() {
        e.subject(format!("spec.subjects[{i}]"), s, true);
    }
    if !(1..=5).contains(&spec.replicas) {
        e.add("spec.replicas", "must be between 1 and 5");
    }
    for (field, value) in [
        ("spec.maxMsgs", spec.max_msgs),
        ("spec.maxMsgsPerSubject", spec.max_msgs_per_subject),
    ] {
        if value.is_some_and(|v| v < 1) {
            e.add(field, "must be at least 1 (omit it for no limit)");
        }
    }
    if spec.mode == StreamMode::Observe && spec.deletion_policy == DeletionPolicy::Delete {
        e.add(
            "spec.deletionPolicy",
            "Delete is not allowed for a Stream in Observe mode, which never writes to the stream",
        );
    }
    if let Some(conn) = &spec.connection {
        check_connection(&mut e, "spec.connection", conn);
    }
    e.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects() {
        assert!(check_subject("orders.*.created", true).is_ok());
        assert!(check_subject("orders.>", true).is_ok());
        assert!(check_subject("orders.>.x", true).is_err());
        assert!(check_subject("orders..x", true).is_err());
        assert!(check_subject("orders.*", false).is_err());
        assert!(check_subject("ord*ers", true).is_err());
    }

    #[test]
    fn overlapping_subjects() {
        for (a, b) in [
            ("orders.>", "orders.eu.>"),
            ("orders.>", "orders.eu"),
            ("orders.*", "orders.eu"),
            ("orders.*.x", "orders.eu.*"),
            ("orders.*.>", "orders.eu.>"),
            (">", "orders"),
            ("orders.eu", "orders.eu"),
        ] {
            assert!(subjects_overlap(a, b), "{a} {b}");
            assert!(subjects_overlap(b, a), "{b} {a}");
        }
        for (a, b) in [
            ("orders.eu", "orders.us"),
            ("orders.>", "orders"),
            ("orders.*", "orders.eu.x"),
            ("orders.*.x", "orders.eu.y"),
            ("orders.eu.>", "orders.us.>"),
        ] {
            assert!(!subjects_overlap(a, b), "{a} {b}");
            assert!(!subjects_overlap(b, a), "{b} {a}");
        }
    }

    #[test]
    fn server_urls() {
        for ok in [
            "nats://a:4222",
            "tls://a",
            "nats://u:p@a:4222",
            "ws://[::1]:8080/x",
        ] {
            assert!(check_server_url(ok).is_ok(), "{ok}");
        }
        for bad in ["a:4222", "nats://", "nats://a:x", "nats://a:70000"] {
            assert!(check_server_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn templates() {
        assert!(check_subject_template("{{subject}}", false).is_ok());
        assert!(check_subject_template("out.{{token(2)}}.x", false).is_ok());
        assert!(check_subject_template("out.{{payload.kind}}", true).is_ok());
        assert!(check_subject_template("out.{{payload.kind}}", false).is_err());
        assert!(check_subject_template("out.{{token(0)}}", false).is_err());
        assert!(check_subject_template("out.{{subjct}}", false).is_err());
        assert!(check_subject_template("out.{{subject", false).is_err());
        assert!(check_subject_template("out.*", false).is_err());
    }
}
