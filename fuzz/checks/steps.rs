//! The properties the fuzz targets check on jetflow's steps, shared with the regression tests
//! (`steps/tests/fuzz_regressions.rs` includes this file): each function takes arbitrary
//! bytes and panics when a property does not hold. Inputs that are not of the expected form
//! (a template that does not compile, a payload that is not JSON) are fine: they must only
//! fail with an error, never panic.

use std::sync::OnceLock;

use bytes::Bytes;
use jetflow_crds::pipeline::Step;
use jetflow_crds::validate::check_subject;
use jetflow_steps::template::SubjectTemplate;
use jetflow_steps::{Headers, Input, OutputHeaders, Steps};

fn step(json: serde_json::Value) -> Step {
    serde_json::from_value(json).expect("a step")
}

/// `map: "."`: the payload read, and written back, as any `map` writes its output.
fn identity_map() -> &'static Steps {
    static STEPS: OnceLock<Steps> = OnceLock::new();
    STEPS
        .get_or_init(|| Steps::compile(&[step(serde_json::json!({"map": "."}))]).expect("compiles"))
}

fn map_identity(payload: &[u8]) -> Result<Bytes, jetflow_steps::StepFailure> {
    let payload = Bytes::copy_from_slice(payload);
    let outputs = identity_map().apply(Input {
        subject: "in.x",
        headers: None,
        payload: &payload,
        seq: 1,
    })?;
    assert_eq!(outputs.len(), 1, "`.` yields one output");
    Ok(outputs[0].payload.clone())
}

/// Payload parsing and writing: whatever the steps read, they write back as valid JSON
/// (UTF-8, RFC 8259) that reads back to the same value; what they cannot read (or a value JSON
/// cannot hold, as jq's extensions make) fails the message.
pub fn json(data: &[u8]) {
    let Ok(written) = map_identity(data) else {
        return;
    };
    let text = std::str::from_utf8(&written)
        .unwrap_or_else(|e| panic!("output is not UTF-8 ({e}): {written:?}"));
    if let Err(at) = strict_json(text.as_bytes()) {
        panic!("output is not JSON (at byte {at}): {text:?}");
    }
    // Read back and written again, it is the same text: the same value.
    let again = map_identity(&written).unwrap_or_else(|e| panic!("output reads back: {e}"));
    assert_eq!(again, written, "written twice, the same bytes");
    // Against an independent reader: where serde_json reads the input (within its nesting
    // limit, numbers within f64), it reads the output to the same value.
    if let (Ok(before), Ok(after)) = (
        serde_json::from_slice::<serde_json::Value>(data),
        serde_json::from_slice::<serde_json::Value>(&written),
    ) {
        assert!(same(&before, &after), "{before} became {after}");
    }
}

/// JSON values equal as values: numbers compared as f64 (as serde_json reads them both).
fn same(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value::*;
    match (a, b) {
        (Number(x), Number(y)) => x.as_f64() == y.as_f64(),
        (Array(x), Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y)),
        (Object(x), Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

/// Checks `text` against RFC 8259's grammar without recursion; the error is the byte offset
/// where it fails.
pub fn strict_json(text: &[u8]) -> Result<(), usize> {
    #[derive(Clone, Copy, PartialEq)]
    enum Open {
        Array,
        Object,
    }
    let mut pos = 0;
    let ws = |pos: &mut usize| {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = text.get(*pos) {
            *pos += 1;
        }
    };
    let mut stack: Vec<Open> = Vec::new();
    ws(&mut pos);
    loop {
        // A value.
        match text.get(pos) {
            Some(b'[') => {
                pos += 1;
                ws(&mut pos);
                if text.get(pos) == Some(&b']') {
                    pos += 1;
                } else {
                    stack.push(Open::Array);
                    continue;
                }
            }
            Some(b'{') => {
                pos += 1;
                ws(&mut pos);
                if text.get(pos) == Some(&b'}') {
                    pos += 1;
                } else {
                    stack.push(Open::Object);
                    string(text, &mut pos)?;
                    ws(&mut pos);
                    if text.get(pos) != Some(&b':') {
                        return Err(pos);
                    }
                    pos += 1;
                    ws(&mut pos);
                    continue;
                }
            }
            Some(b'"') => string(text, &mut pos)?,
            Some(b't') if text[pos..].starts_with(b"true") => pos += 4,
            Some(b'f') if text[pos..].starts_with(b"false") => pos += 5,
            Some(b'n') if text[pos..].starts_with(b"null") => pos += 4,
            Some(b'-' | b'0'..=b'9') => number(text, &mut pos)?,
            _ => return Err(pos),
        }
        // After a value: close what ends here, or go on to the next item.
        loop {
            ws(&mut pos);
            let Some(&open) = stack.last() else {
                return if pos == text.len() { Ok(()) } else { Err(pos) };
            };
            match (open, text.get(pos)) {
                (Open::Array, Some(b']')) | (Open::Object, Some(b'}')) => {
                    pos += 1;
                    stack.pop();
                }
                (_, Some(b',')) => {
                    pos += 1;
                    ws(&mut pos);
                    if open == Open::Object {
                        string(text, &mut pos)?;
                        ws(&mut pos);
                        if text.get(pos) != Some(&b':') {
                            return Err(pos);
                        }
                        pos += 1;
                        ws(&mut pos);
                    }
                    break;
                }
                _ => return Err(pos),
            }
        }
    }
}

fn string(text: &[u8], pos: &mut usize) -> Result<(), usize> {
    if text.get(*pos) != Some(&b'"') {
        return Err(*pos);
    }
    *pos += 1;
    loop {
        match text.get(*pos) {
            None | Some(0..=0x1f) => return Err(*pos),
            Some(b'"') => {
                *pos += 1;
                return Ok(());
            }
            Some(b'\\') => {
                *pos += 1;
                match text.get(*pos) {
                    Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => *pos += 1,
                    Some(b'u') => {
                        let hex = text.get(*pos + 1..*pos + 5).ok_or(*pos)?;
                        if !hex.iter().all(u8::is_ascii_hexdigit) {
                            return Err(*pos);
                        }
                        *pos += 5;
                    }
                    _ => return Err(*pos),
                }
            }
            Some(_) => *pos += 1,
        }
    }
}

fn number(text: &[u8], pos: &mut usize) -> Result<(), usize> {
    let digits = |pos: &mut usize| {
        let start = *pos;
        while let Some(b'0'..=b'9') = text.get(*pos) {
            *pos += 1;
        }
        *pos > start
    };
    if text.get(*pos) == Some(&b'-') {
        *pos += 1;
    }
    match text.get(*pos) {
        Some(b'0') => *pos += 1,
        Some(b'1'..=b'9') => {
            digits(pos);
        }
        _ => return Err(*pos),
    }
    if text.get(*pos) == Some(&b'.') {
        *pos += 1;
        if !digits(pos) {
            return Err(*pos);
        }
    }
    if let Some(b'e' | b'E') = text.get(*pos) {
        *pos += 1;
        if let Some(b'+' | b'-') = text.get(*pos) {
            *pos += 1;
        }
        if !digits(pos) {
            return Err(*pos);
        }
    }
    Ok(())
}

/// Splits fuzz input into `n` text fields separated by NUL bytes (missing ones empty, the
/// last takes the rest), or `None` where a field is not UTF-8.
fn fields(data: &[u8], n: usize) -> Option<Vec<&str>> {
    let mut parts: Vec<&str> = data
        .splitn(n, |b| *b == 0)
        .map(std::str::from_utf8)
        .collect::<Result<_, _>>()
        .ok()?;
    parts.resize(n, "");
    Some(parts)
}

/// Subject templates: compiling any text fails or succeeds without panicking; rendering a
/// compiled template against any subject and payload too; a template rendered from a valid
/// subject gives a valid subject or an error.
pub fn template(data: &[u8]) {
    let Some(f) = fields(data, 3) else {
        return;
    };
    let (text, subject, payload) = (f[0], f[1], f[2].as_bytes());
    let subject_valid = check_subject(subject, false).is_ok();
    if let Ok(t) = SubjectTemplate::compile(text) {
        if let Ok(rendered) = t.render(subject, payload)
            && subject_valid
        {
            assert!(
                check_subject(&rendered, false).is_ok(),
                "{text:?} rendered {rendered:?} from {subject:?}"
            );
        }
        if t.is_identity() {
            assert_eq!(t.render(subject, payload).ok().as_deref(), Some(subject));
        }
    }
    if let Ok(t) = SubjectTemplate::compile_subject_only(text) {
        assert!(!t.uses_payload(), "{text:?}");
        let rendered = t.render_subject(subject);
        assert_eq!(
            rendered.as_ref().ok(),
            t.render(subject, payload).as_ref().ok(),
            "{text:?}: the payload is not read"
        );
        if let Ok(rendered) = rendered
            && subject_valid
        {
            assert!(
                check_subject(&rendered, false).is_ok(),
                "{text:?} rendered {rendered:?} from {subject:?}"
            );
        }
    }
}

/// The header steps over any headers: `setSubject`, `setHeaders` (one header, from a
/// template) and `dropHeaders` (one name), compiled from fuzz input and run on a message with
/// headers from fuzz input. What compiles runs without panicking; an output carries the set
/// header with a value free of line breaks, not the dropped one, and every other header as it
/// came.
pub fn header_steps(data: &[u8]) {
    let Some(f) = fields(data, 7) else {
        return;
    };
    let (subject_template, set_name, set_template, drop_name, subject, payload, pairs) =
        (f[0], f[1], f[2], f[3], f[4], f[5], f[6]);
    let mut steps = Vec::new();
    if !subject_template.is_empty() {
        steps.push(step(serde_json::json!({"setSubject": subject_template})));
    }
    steps.push(step(
        serde_json::json!({"setHeaders": {set_name: set_template}}),
    ));
    steps.push(step(serde_json::json!({"dropHeaders": [drop_name]})));
    let Ok(steps) = Steps::compile(&steps) else {
        return;
    };
    // Headers as NATS delivers them: `name:value` lines.
    let headers: Headers = pairs
        .split('\n')
        .filter_map(|line| line.split_once(':'))
        .collect();
    let payload = Bytes::copy_from_slice(payload.as_bytes());
    let Ok(outputs) = steps.apply(Input {
        subject,
        headers: Some(&headers),
        payload: &payload,
        seq: 7,
    }) else {
        return;
    };
    assert_eq!(outputs.len(), 1);
    let output = &outputs[0];
    assert_eq!(output.payload, payload, "header steps keep the payload");
    if check_subject(subject, false).is_ok() {
        assert!(check_subject(&output.subject, false).is_ok(), "{output:?}");
    }
    let OutputHeaders::Changed(changed) = &output.headers else {
        panic!("header steps change the headers: {output:?}");
    };
    let empty = Headers::new();
    let changed = changed.as_ref().unwrap_or(&empty);
    if set_name != drop_name {
        let values: Vec<&str> = changed.get_all(set_name).collect();
        assert_eq!(values.len(), 1, "{set_name:?} set once: {changed:?}");
        assert!(!values[0].contains(['\r', '\n']), "{changed:?}");
    }
    assert_eq!(
        changed.get(drop_name),
        None,
        "{drop_name:?} dropped: {changed:?}"
    );
    let others = |h: &Headers| -> Vec<(String, String)> {
        h.iter()
            .filter(|(n, _)| *n != set_name && *n != drop_name)
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .collect()
    };
    assert_eq!(
        others(changed),
        others(&headers),
        "other headers as they came"
    );
}

/// [`Headers`] against a model (a list of pairs): a sequence of appends, inserts and removes
/// over a few names, read back with every accessor after each.
pub fn headers(data: &[u8]) {
    const NAMES: [&str; 4] = ["A", "a", "Nats-Msg-Id", "Jetflow-Error"];
    let mut headers = Headers::new();
    let mut model: Vec<(String, String)> = Vec::new();
    for (i, op) in data.chunks(2).enumerate() {
        let name = NAMES[usize::from(op[0] >> 2) % NAMES.len()];
        let value = format!("v{i}-{}", op.get(1).copied().unwrap_or(0));
        match op[0] & 3 {
            0 | 1 => {
                headers.append(name, value.clone());
                model.push((name.to_owned(), value));
            }
            2 => {
                headers.insert(name, value.clone());
                match model.iter().position(|(n, _)| n == name) {
                    Some(first) => {
                        model[first].1 = value;
                        let mut index = 0;
                        model.retain(|(n, _)| {
                            index += 1;
                            index - 1 <= first || n != name
                        });
                    }
                    None => model.push((name.to_owned(), value)),
                }
            }
            _ => {
                headers.remove(name);
                model.retain(|(n, _)| n != name);
            }
        }
        let pairs: Vec<(&str, &str)> = headers.iter().collect();
        let expected: Vec<(&str, &str)> = model
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        assert_eq!(pairs, expected);
        assert_eq!(headers.len(), model.len());
        assert_eq!(headers.is_empty(), model.is_empty());
        for name in NAMES {
            let all: Vec<&str> = headers.get_all(name).collect();
            let expected: Vec<&str> = expected
                .iter()
                .filter(|(n, _)| *n == name)
                .map(|(_, v)| *v)
                .collect();
            assert_eq!(headers.get(name), expected.first().copied());
            assert_eq!(all, expected);
        }
    }
}
