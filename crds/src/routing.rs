//! Where a pipeline's outputs and dead letters go, checked before anything moves: an output
//! subject that the sink stream cannot capture, or that comes back to the source (so that the
//! pipeline reads its own outputs again, for ever), is refused with the field and the reason.
//!
//! What can be decided is decided on the subjects a message can have: the source's filters or
//! subjects, passed through the `setSubject` steps and the sink's template, as
//! [`Pattern`]s (a `{{token(N)}}` of an unknown token is one unknown token, a
//! `{{payload.field}}` any number of tokens). Only what is certainly wrong is refused: an
//! output set that no subject of the sink stream can match, or one that lies wholly inside
//! what the source reads. What depends on the data (a payload field that picks the subject) is
//! left to the sink at run time, which refuses an output stored by another stream.
//!
//! Two stages: [`check`] needs only the Pipeline (the CRD has a CEL rule for its plainest
//! case, the default `{{subject}}` with no `setSubject` step) and is part of
//! [`crate::validate::pipeline`]; [`check_streams`] adds what the streams' subjects tell, from
//! NATS (the operator, the worker at start) or from the `Stream` documents of a manifest
//! (`jetflow-worker check`).

use crate::Pipeline;
use crate::pipeline::{ErrorAction, PipelineSpec};
use crate::subject::{Pattern, Token};
use crate::validate::FieldError;

/// What is known of a JetStream stream's subjects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamSubjects {
    /// The JetStream stream's name.
    pub name: String,
    /// The subjects it captures.
    pub subjects: Vec<String>,
    /// Whether it stores messages only from its subjects and under the subject published to:
    /// false with a subject transform, a mirror or sources, whose messages carry subjects the
    /// list does not show.
    pub stores_as_captured: bool,
}

impl StreamSubjects {
    /// The subjects a `Stream` resource declares, `None` when it does not say (an `Observe`
    /// Stream names an existing stream and may leave its subjects out).
    pub fn of_stream(stream: &crate::Stream) -> Option<Self> {
        let spec = &stream.spec;
        if spec.mode == crate::stream::StreamMode::Observe && spec.subjects.is_empty() {
            return None;
        }
        Some(Self {
            name: stream.stream_name(),
            subjects: spec.subjects.clone(),
            stores_as_captured: spec.subject_transform.is_none(),
        })
    }
}

/// The source and sink streams of a pipeline, where known.
#[derive(Clone, Copy, Debug, Default)]
pub struct Streams<'a> {
    /// The JetStream source's stream.
    pub source: Option<&'a StreamSubjects>,
    /// The JetStream sink's stream.
    pub sink: Option<&'a StreamSubjects>,
}

/// The refusals that need only the Pipeline: outputs (or dead letters) that certainly come
/// back to the source, whatever the streams' subjects.
pub fn check(p: &Pipeline) -> Vec<FieldError> {
    let spec = &p.spec;
    let mut errors = Reports::default();
    let Some(sink) = SinkRoute::of(spec) else {
        return Vec::new();
    };
    let identity = spec.steps.iter().all(|s| s.set_subject.is_none())
        && parts(sink.template).is_some_and(|parts| parts == [Part::Subject]);
    if let Some(js) = &spec.source.jetstream {
        let stream = &js.stream;
        let same = sink.stream == Some(stream.as_str());
        if identity {
            let (into, fix) = match sink.stream {
                Some(_) if same => (
                    format!("back into stream {stream}, the stream the pipeline reads"),
                    "set a subject outside the source's filterSubjects, or write to another stream",
                ),
                Some(k) => (
                    format!(
                        "back into source stream {stream}, which captures it (not into sink stream {k})"
                    ),
                    "set a subject that the sink stream captures, such as \"<prefix>.{{subject}}\", or add a setSubject step",
                ),
                None => (
                    format!("into source stream {stream}, which captures it"),
                    "set another subject, such as \"<prefix>.{{subject}}\"",
                ),
            };
            errors.add(
                sink.field,
                format!(
                    "{{{{subject}}}} (the default) with no setSubject step writes each output to the subject it was read from, so it goes {into} and is read again, for ever; {fix}"
                ),
            );
        } else if same && js.filter_subjects.is_empty() {
            errors.add(
                "spec.sink.jetstream.stream",
                format!(
                    "the sink stream {stream} is the source stream and the source reads all of it (no spec.source.jetstream.filterSubjects): every output would be read again, for ever; read only filterSubjects the sink subject stays outside of, or write to another stream"
                ),
            );
        } else if same {
            for out in outputs(spec, None) {
                if let Some((i, filter)) = within_any(&out.pattern, &js.filter_subjects) {
                    errors.add(
                        sink.field,
                        format!(
                            "outputs go to {} ({}), into stream {stream}, where spec.source.jetstream.filterSubjects[{i}] {filter:?} reads them again, for ever; set a subject outside the filters",
                            out.shown,
                            out.origin(&sink)
                        ),
                    );
                }
            }
        }
    } else if let Some(core) = &spec.source.core {
        if identity {
            errors.add(
                sink.field,
                "{{subject}} (the default) with no setSubject step publishes each output to the subject it was received on, which the subscription to spec.source.core.subjects receives again: every output comes back as input, for ever; set another subject, such as \"<prefix>.{{subject}}\"",
            );
        } else {
            for out in outputs(spec, None) {
                if let Some((i, subject)) = within_any(&out.pattern, &core.subjects) {
                    errors.add(
                        sink.field,
                        format!(
                            "outputs go to {} ({}), which spec.source.core.subjects[{i}] {subject:?} subscribes to: every output comes back as input, for ever; set a subject outside the source's subjects",
                            out.shown,
                            out.origin(&sink)
                        ),
                    );
                }
            }
        }
        if spec.errors.policy == ErrorAction::Dlq {
            let dlq = p.dead_letter_subject();
            if let Some((i, subject)) = within_any(&Pattern::parse(&dlq), &core.subjects) {
                errors.add(
                    "spec.errors.deadLetterSubject",
                    format!(
                        "dead letters go to {dlq:?}, which spec.source.core.subjects[{i}] {subject:?} subscribes to: a message that fails would come back as input and fail again, for ever; set a dead-letter subject outside the source's subjects"
                    ),
                );
            }
        }
    }
    errors.finish()
}

/// The refusals that the source and sink streams' subjects decide, beyond [`check`]'s (none
/// while [`check`] finds something: those are reported by the spec's validation).
pub fn check_streams(p: &Pipeline, streams: Streams<'_>) -> Vec<FieldError> {
    let spec = &p.spec;
    if !check(p).is_empty() {
        return Vec::new();
    }
    let Some(sink) = SinkRoute::of(spec) else {
        return Vec::new();
    };
    let source = spec.source.jetstream.as_ref().and(streams.source);
    let mut errors = Reports::default();
    let sink_stream = sink.stream.and(streams.sink);
    if let Some(k) = sink_stream
        && k.subjects.is_empty()
    {
        errors.add(
            "spec.sink.jetstream.stream",
            format!(
                "sink stream {} has no subjects of its own (a mirror, or a stream that only sources others): nothing the pipeline publishes can be stored in it",
                k.name
            ),
        );
        return errors.finish();
    }
    for out in outputs(spec, source) {
        let misses = sink_stream.filter(|k| {
            !k.subjects
                .iter()
                .any(|f| out.pattern.overlaps(&Pattern::parse(f)))
        });
        let again = read_again(p, source, &out.pattern);
        let mut reasons = Vec::new();
        if let Some(k) = misses {
            let mut reason = format!(
                "which sink stream {} (subjects {}) does not capture",
                k.name,
                list(&k.subjects)
            );
            if let Some(s) = source.filter(|s| s.name != k.name)
                && let Some(f) = s
                    .subjects
                    .iter()
                    .find(|f| out.pattern.within(&Pattern::parse(f)))
            {
                reason.push_str(&format!(
                    "; source stream {} captures them (subject {f}) and would store them instead",
                    s.name
                ));
            }
            reasons.push(reason);
        }
        if let Some(again) = again {
            reasons.push(format!(
                "{again}: every output would be read again, for ever"
            ));
        }
        if !reasons.is_empty() {
            let fix = match misses {
                Some(k) => format!("; set a subject that sink stream {} captures", k.name),
                None => "; set a subject outside what the source reads".to_owned(),
            };
            errors.add(
                sink.field,
                format!(
                    "outputs go to {} ({}), {}{fix}",
                    out.shown,
                    out.origin(&sink),
                    reasons.join("; ")
                ),
            );
        }
    }
    if spec.errors.policy == ErrorAction::Dlq {
        let dlq = p.dead_letter_subject();
        if let Some(again) = read_again(p, source, &Pattern::parse(&dlq)) {
            errors.add(
                "spec.errors.deadLetterSubject",
                format!(
                    "dead letters go to {dlq:?}, {again}: a message that fails would be read again and fail again, for ever; set a dead-letter subject outside what the source reads"
                ),
            );
        }
    }
    errors.finish()
}

/// Why every subject of `pattern` published would be read again by the JetStream source, or
/// `None` when that is not certain.
fn read_again(p: &Pipeline, source: Option<&StreamSubjects>, pattern: &Pattern) -> Option<String> {
    let js = p.spec.source.jetstream.as_ref()?;
    let s = source?;
    let captured = s
        .subjects
        .iter()
        .find(|f| pattern.within(&Pattern::parse(f)))?;
    if js.filter_subjects.is_empty() {
        return Some(format!(
            "which source stream {} captures (subject {captured}) and the pipeline reads whole",
            s.name
        ));
    }
    if !s.stores_as_captured {
        // Stored under another subject than published: the filters may not see it.
        return None;
    }
    let (i, filter) = within_any(pattern, &js.filter_subjects)?;
    Some(format!(
        "which source stream {} captures (subject {captured}) and spec.source.jetstream.filterSubjects[{i}] {filter:?} reads",
        s.name
    ))
}

/// The first of `filters` that holds all of `pattern`, with its index.
fn within_any<'f>(pattern: &Pattern, filters: &'f [String]) -> Option<(usize, &'f str)> {
    filters
        .iter()
        .enumerate()
        .find(|(_, f)| pattern.within(&Pattern::parse(f)))
        .map(|(i, f)| (i, f.as_str()))
}

/// Subjects for a message, shortened past a handful.
fn list(subjects: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut text = subjects
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if subjects.len() > SHOWN {
        text.push_str(&format!(" and {} more", subjects.len() - SHOWN));
    }
    text
}

/// Findings by field, the first of each kept with a count of the others, so that a hundred
/// filters wrong alike make one line.
#[derive(Default)]
struct Reports(Vec<(String, String, usize)>);

impl Reports {
    fn add(&mut self, field: &str, message: impl Into<String>) {
        match self.0.iter_mut().find(|(f, _, _)| f == field) {
            Some((_, _, more)) => *more += 1,
            None => self.0.push((field.to_owned(), message.into(), 0)),
        }
    }

    fn finish(self) -> Vec<FieldError> {
        self.0
            .into_iter()
            .map(|(field, mut message, more)| {
                if more > 0 {
                    message.push_str(&format!(" (and {more} more alike)"));
                }
                FieldError { field, message }
            })
            .collect()
    }
}

/// The sink's subject template and stream.
struct SinkRoute<'a> {
    field: &'static str,
    template: &'a str,
    stream: Option<&'a str>,
    /// Index of the last `setSubject` step.
    set_by: Option<usize>,
}

impl<'a> SinkRoute<'a> {
    fn of(spec: &'a PipelineSpec) -> Option<Self> {
        let set_by = spec.steps.iter().rposition(|s| s.set_subject.is_some());
        match (&spec.sink.jetstream, &spec.sink.core) {
            (Some(js), _) => Some(Self {
                field: "spec.sink.jetstream.subject",
                template: &js.subject,
                stream: Some(&js.stream),
                set_by,
            }),
            (None, Some(core)) => Some(Self {
                field: "spec.sink.core.subject",
                template: &core.subject,
                stream: None,
                set_by,
            }),
            (None, None) => None,
        }
    }
}

/// A set of subjects a message can have at some point of the pipeline, as shown to people,
/// and where in the source it comes from.
struct Flow {
    pattern: Pattern,
    shown: String,
    source: String,
}

impl Flow {
    fn origin(&self, sink: &SinkRoute) -> String {
        match sink.set_by {
            Some(i) => format!("{}, through spec.steps[{i}].setSubject", self.source),
            None => self.source.clone(),
        }
    }
}

/// The subjects the source's messages have: its filters or subjects, else the source stream's
/// subjects where they are what it stores, else any.
fn inputs(spec: &PipelineSpec, source: Option<&StreamSubjects>) -> Vec<Flow> {
    let flow = |subject: &str, origin: String| Flow {
        pattern: Pattern::parse(subject),
        shown: subject.to_owned(),
        source: origin,
    };
    if let Some(core) = &spec.source.core {
        return core
            .subjects
            .iter()
            .enumerate()
            .map(|(i, s)| flow(s, format!("from spec.source.core.subjects[{i}] {s}")))
            .collect();
    }
    let Some(js) = &spec.source.jetstream else {
        return Vec::new();
    };
    if !js.filter_subjects.is_empty() {
        return js
            .filter_subjects
            .iter()
            .enumerate()
            .map(|(i, f)| {
                flow(
                    f,
                    format!("from spec.source.jetstream.filterSubjects[{i}] {f}"),
                )
            })
            .collect();
    }
    match source {
        Some(s) if s.stores_as_captured && !s.subjects.is_empty() => s
            .subjects
            .iter()
            .map(|subject| {
                flow(
                    subject,
                    format!("from source stream {} subject {subject}", s.name),
                )
            })
            .collect(),
        _ => vec![flow(">", format!("from stream {}", js.stream))],
    }
}

/// The subject sets of the outputs, one per input, through the `setSubject` steps and the
/// sink's template. An input that a template cannot render for (a missing token) has none.
fn outputs(spec: &PipelineSpec, source: Option<&StreamSubjects>) -> Vec<Flow> {
    let Some(sink) = SinkRoute::of(spec) else {
        return Vec::new();
    };
    let mut templates = Vec::new();
    for step in &spec.steps {
        if let Some(t) = &step.set_subject {
            match parts(t) {
                Some(p) => templates.push(p),
                None => return Vec::new(),
            }
        }
    }
    match parts(sink.template) {
        Some(p) => templates.push(p),
        None => return Vec::new(),
    }
    let mut out: Vec<Flow> = Vec::new();
    for input in inputs(spec, source) {
        let mut flow = Some(input);
        for template in &templates {
            flow = flow.and_then(|f| render(template, &f));
        }
        if let Some(f) = flow
            && !out.iter().any(|o| o.pattern == f.pattern)
        {
            out.push(f);
        }
    }
    out
}

/// A placeholder or literal text of a subject template.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Literal(String),
    Subject,
    /// 0-based token index.
    Token(usize),
    /// The field path.
    Payload(String),
}

/// The parts of a template, `None` when it does not parse (the spec's validation reports
/// that).
fn parts(text: &str) -> Option<Vec<Part>> {
    let mut parts = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        if start > 0 {
            parts.push(Part::Literal(rest[..start].to_owned()));
        }
        let end = rest[start..].find("}}")?;
        let inner = rest[start + 2..start + end].trim();
        let part = if inner == "subject" {
            Part::Subject
        } else if let Some(path) = inner.strip_prefix("payload.") {
            Part::Payload(path.to_owned())
        } else {
            let n: usize = inner
                .strip_prefix("token(")?
                .strip_suffix(')')?
                .trim()
                .parse()
                .ok()?;
            Part::Token(n.checked_sub(1)?)
        };
        parts.push(part);
        rest = &rest[start + end + 2..];
    }
    if !rest.is_empty() {
        parts.push(Part::Literal(rest.to_owned()));
    }
    Some(parts)
}

/// Text of one token, or a placeholder's value, before the template's text is cut into tokens.
enum Piece {
    Text(String),
    Dot,
    Unknown(Token),
}

/// What `template` renders for subjects of `input`; `None` when it renders nothing valid.
fn render(template: &[Part], input: &Flow) -> Option<Flow> {
    let mut pieces = Vec::new();
    let mut shown = String::new();
    let text = |pieces: &mut Vec<Piece>, s: &str| {
        for (k, segment) in s.split('.').enumerate() {
            if k > 0 {
                pieces.push(Piece::Dot);
            }
            if !segment.is_empty() {
                pieces.push(Piece::Text(segment.to_owned()));
            }
        }
    };
    for part in template {
        match part {
            Part::Literal(s) => {
                shown.push_str(s);
                text(&mut pieces, s);
            }
            Part::Subject => {
                shown.push_str(&input.shown);
                for (k, t) in input.pattern.0.iter().enumerate() {
                    if k > 0 {
                        pieces.push(Piece::Dot);
                    }
                    pieces.push(match t {
                        Token::Literal(s) => Piece::Text(s.clone()),
                        other => Piece::Unknown(other.clone()),
                    });
                }
            }
            Part::Token(i) => match token(&input.pattern, *i)? {
                Token::Literal(s) => {
                    shown.push_str(&s);
                    pieces.push(Piece::Text(s));
                }
                other => {
                    shown.push('*');
                    pieces.push(Piece::Unknown(other));
                }
            },
            Part::Payload(path) => {
                shown.push_str(&format!("{{{{payload.{path}}}}}"));
                pieces.push(Piece::Unknown(Token::Many));
            }
        }
    }
    let mut tokens = Vec::new();
    let mut current: Vec<Piece> = Vec::new();
    for piece in pieces.into_iter().chain([Piece::Dot]) {
        if !matches!(piece, Piece::Dot) {
            current.push(piece);
            continue;
        }
        if current.is_empty() {
            // An empty token: the rendered subject is invalid and never published.
            return None;
        }
        let token = if current
            .iter()
            .any(|p| matches!(p, Piece::Unknown(Token::Many)))
        {
            Token::Many
        } else if current.iter().any(|p| matches!(p, Piece::Unknown(_))) {
            Token::One
        } else {
            Token::Literal(
                current
                    .iter()
                    .filter_map(|p| match p {
                        Piece::Text(s) => Some(s.as_str()),
                        _ => None,
                    })
                    .collect(),
            )
        };
        tokens.push(token);
        current.clear();
    }
    Some(Flow {
        pattern: Pattern(tokens),
        shown,
        source: input.source.clone(),
    })
}

/// The `i`-th (0-based) token of subjects of `pattern`: known when every token before it is
/// one token; `None` when no subject of it has that many.
fn token(pattern: &Pattern, i: usize) -> Option<Token> {
    for (k, t) in pattern.0.iter().enumerate() {
        match t {
            Token::Many => return Some(Token::One),
            _ if k == i => return Some(t.clone()),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
#[path = "routing_tests.rs"]
mod tests;
