//! Running compiled steps over one message.
//!
//! A message moves through the steps as a [`Msg`]: its subject, headers, the original payload
//! bytes (kept while no `map` replaced them) and the parsed value (made on the first step that
//! reads the payload, then shared by every later step and every output of a `map`). At the end,
//! a payload that a `map` replaced is written back to JSON once; any other payload leaves as the
//! very bytes that came in.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use jaq_json::{Num, Val};

use crate::compile::{Compiled, Kind};
use crate::jq::{Globals, Jq};
use crate::template::RenderError;
use crate::{
    FailureKind, Headers, Input, MAX_DEPTH, MAX_ERROR_LEN, Output, OutputHeaders, StepFailure,
    Steps, depth, json,
};

/// The most outputs one source message may produce across all `map` steps; more fails the
/// message (kind eval). It bounds the memory an expression such as `range(1e9)` can take.
pub const MAX_OUTPUTS: usize = 10_000;

/// A message between two steps; subject and headers stay borrowed from the input until a step
/// changes them.
struct Msg<'a> {
    subject: Cow<'a, str>,
    headers: Option<Cow<'a, Headers>>,
    /// Whether a step changed the headers.
    headers_changed: bool,
    /// The payload as received, while no `map` replaced it.
    raw: Option<Bytes>,
    /// The payload as a JSON value, once parsed or produced by a `map`.
    value: Option<Val>,
    /// Index of the `map` step that produced `value`, when one did.
    mapped_by: Option<usize>,
    /// `$subject` and `$headers` as jq values, built on first use and dropped when a step
    /// changes the subject or headers.
    subject_var: Option<Val>,
    headers_var: Option<Val>,
}

impl<'a> Msg<'a> {
    fn parsed(&mut self, at: (usize, &str)) -> Result<&Val, StepFailure> {
        if self.value.is_none() {
            let empty = Bytes::new();
            let raw = self.raw.as_ref().unwrap_or(&empty);
            let value =
                json::parse(raw).map_err(|e| failure(at, FailureKind::Parse, e.to_string()))?;
            self.value = Some(value);
        }
        Ok(self.value.as_ref().expect("parsed above"))
    }

    fn globals(&mut self, jq: &Jq, seq: u64) -> Globals {
        let subject = if jq.uses_subject {
            self.subject_var
                .get_or_insert_with(|| Val::from(self.subject.to_string()))
                .clone()
        } else {
            Val::Null
        };
        let headers = if jq.uses_headers {
            self.headers_var
                .get_or_insert_with(|| headers_value(self.headers.as_deref()))
                .clone()
        } else {
            Val::Null
        };
        Globals {
            subject,
            headers,
            seq: Val::Num(Num::from_integral(seq)),
        }
    }

    /// A copy for one output of a `map`, carrying `value` as its payload.
    fn with_value(&self, value: Val, step: usize) -> Msg<'a> {
        Msg {
            subject: self.subject.clone(),
            headers: self.headers.clone(),
            headers_changed: self.headers_changed,
            raw: None,
            value: Some(value),
            mapped_by: Some(step),
            subject_var: self.subject_var.clone(),
            headers_var: self.headers_var.clone(),
        }
    }
}

/// `$headers`: header name to first value, in name order so that expressions iterating over
/// it (`keys_unsorted`, `to_entries`) see the same order on every replay.
fn headers_value(headers: Option<&Headers>) -> Val {
    let mut sorted = BTreeMap::new();
    for (name, value) in headers.into_iter().flat_map(Headers::iter) {
        sorted.entry(name).or_insert(value);
    }
    Val::obj(
        sorted
            .into_iter()
            .map(|(k, v)| (Val::from(k.to_owned()), Val::from(v.to_owned())))
            .collect(),
    )
}

fn failure(at: (usize, &str), kind: FailureKind, message: String) -> StepFailure {
    StepFailure {
        index: at.0,
        name: at.1.to_owned(),
        kind,
        message: truncate(message),
    }
}

fn truncate(mut s: String) -> String {
    if s.len() > MAX_ERROR_LEN {
        let mut end = MAX_ERROR_LEN - '…'.len_utf8();
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

/// A short description of a value for error messages; safe on values of any depth.
fn describe(v: &Val) -> String {
    depth::display_cut(v, 64).0
}

/// Fails an output nested deeper than [`MAX_DEPTH`], before anything recurses over it (the
/// next step, the writer, a later drop); the output is taken apart without recursion.
fn check_depth(at: (usize, &str), value: Val) -> Result<Val, StepFailure> {
    if !depth::exceeds(&value, MAX_DEPTH) {
        return Ok(value);
    }
    depth::drop_deep(value);
    Err(failure(
        at,
        FailureKind::Eval,
        format!("output nests arrays and objects deeper than {MAX_DEPTH} levels, the steps' limit"),
    ))
}

fn render_failure(at: (usize, &str), e: RenderError) -> StepFailure {
    let kind = match e {
        RenderError::Payload(_) => FailureKind::Parse,
        _ => FailureKind::Eval,
    };
    failure(at, kind, e.to_string())
}

impl Steps {
    /// Runs the steps over one message and returns its outputs in a deterministic order: the
    /// same input always yields the same outputs, in the same order, so output `i` can name
    /// itself by `i` in its message id.
    ///
    /// With no steps the message passes as it is. Otherwise the payload is parsed at most once,
    /// and only if a jq step runs or a template reads a payload field.
    pub fn apply(&self, input: Input<'_>) -> Result<Vec<Output>, StepFailure> {
        self.apply_observed(input, &AtomicUsize::new(0))
    }

    /// [`Steps::apply`], storing in `current` the index of the step that runs, so that a
    /// watchdog on another thread can name the step a message is stuck in.
    pub fn apply_observed(
        &self,
        input: Input<'_>,
        current: &AtomicUsize,
    ) -> Result<Vec<Output>, StepFailure> {
        if self.is_passthrough() {
            return Ok(vec![Output {
                subject: input.subject.to_owned(),
                headers: OutputHeaders::Unchanged,
                payload: input.payload.clone(),
            }]);
        }
        let mut msgs = vec![Msg {
            subject: Cow::Borrowed(input.subject),
            headers: input.headers.map(Cow::Borrowed),
            headers_changed: false,
            raw: Some(input.payload.clone()),
            value: None,
            mapped_by: None,
            subject_var: None,
            headers_var: None,
        }];
        let mut next = Vec::new();
        for (index, step) in self.compiled().iter().enumerate() {
            current.store(index, Ordering::Relaxed);
            for msg in msgs.drain(..) {
                apply_step(index, step, msg, input.seq, &mut next)?;
            }
            std::mem::swap(&mut msgs, &mut next);
            if msgs.is_empty() {
                break;
            }
        }
        msgs.into_iter()
            .map(|msg| {
                let payload = match (msg.raw, msg.value) {
                    (Some(raw), _) => raw,
                    (None, Some(value)) => {
                        let step = msg.mapped_by.unwrap_or_default();
                        let at = (step, self.compiled()[step].name.as_str());
                        json::to_bytes(&value).map_err(|e| {
                            failure(at, FailureKind::Eval, format!("output is not JSON: {e}"))
                        })?
                    }
                    (None, None) => Bytes::new(),
                };
                Ok(Output {
                    subject: msg.subject.into_owned(),
                    headers: if msg.headers_changed {
                        OutputHeaders::Changed(msg.headers.map(Cow::into_owned))
                    } else {
                        OutputHeaders::Unchanged
                    },
                    payload,
                })
            })
            .collect()
    }
}

fn apply_step<'a>(
    index: usize,
    step: &Compiled,
    mut msg: Msg<'a>,
    seq: u64,
    out: &mut Vec<Msg<'a>>,
) -> Result<(), StepFailure> {
    let at = (index, step.name.as_str());
    match &step.kind {
        Kind::Filter(jq) => {
            let globals = msg.globals(jq, seq);
            let input = msg.parsed(at)?.clone();
            let first = jq.run(input, globals).next();
            let keep = match first {
                None => false,
                Some(Err(e)) => return Err(failure(at, FailureKind::Eval, e)),
                Some(Ok(Val::Bool(b))) => b,
                Some(Ok(Val::Null)) => false,
                Some(Ok(other)) => {
                    let described = describe(&other);
                    depth::drop_deep(other);
                    return Err(failure(
                        at,
                        FailureKind::Eval,
                        format!("filter yielded {described}, expected true, false or null"),
                    ));
                }
            };
            if keep {
                out.push(msg);
            }
        }
        Kind::Map(jq) => {
            let globals = msg.globals(jq, seq);
            let input = msg.parsed(at)?.clone();
            // Collect every output before emitting any: a message fails whole or not at all.
            let start = out.len();
            for result in jq.run(input, globals) {
                let value = result
                    .map_err(|e| failure(at, FailureKind::Eval, e))
                    .and_then(|value| check_depth(at, value))
                    .inspect_err(|_| out.truncate(start))?;
                if out.len() >= MAX_OUTPUTS {
                    out.truncate(start);
                    return Err(failure(
                        at,
                        FailureKind::Eval,
                        format!("more than {MAX_OUTPUTS} outputs for one message"),
                    ));
                }
                out.push(msg.with_value(value, index));
            }
        }
        Kind::SetSubject(template) => {
            if template.uses_payload() {
                msg.parsed(at)?;
            }
            let value = msg.value.as_ref();
            let subject = template
                .render_with(&msg.subject, || value.ok_or(RenderError::NeedsPayload))
                .map_err(|e| render_failure(at, e))?;
            msg.subject = Cow::Owned(subject);
            msg.subject_var = None;
            out.push(msg);
        }
        Kind::SetHeaders(headers) => {
            if headers.iter().any(|(_, t)| t.uses_payload()) {
                msg.parsed(at)?;
            }
            let mut rendered = Vec::with_capacity(headers.len());
            {
                let value = msg.value.as_ref();
                for (name, template) in headers {
                    let mut text = String::new();
                    template
                        .render_into(&mut text, &msg.subject, || {
                            value.ok_or(RenderError::NeedsPayload)
                        })
                        .map_err(|e| render_failure(at, e))?;
                    if text.contains(['\r', '\n']) {
                        return Err(render_failure(at, RenderError::InvalidHeaderValue(text)));
                    }
                    rendered.push((name.clone(), text));
                }
            }
            let map = msg
                .headers
                .get_or_insert_with(|| Cow::Owned(Headers::new()))
                .to_mut();
            for (name, text) in rendered {
                map.insert(name, text);
            }
            msg.headers_changed = true;
            msg.headers_var = None;
            out.push(msg);
        }
        Kind::DropHeaders(names) => {
            if let Some(mut headers) = msg.headers.take() {
                for name in names {
                    if headers.get(name).is_some() {
                        headers.to_mut().remove(name);
                    }
                }
                msg.headers = (!headers.is_empty()).then_some(headers);
            }
            msg.headers_changed = true;
            msg.headers_var = None;
            out.push(msg);
        }
    }
    Ok(())
}
