//! The payload as a JSON value: parsed once per message, written once when a `map` step
//! replaced it.
//!
//! Parsing uses jaq's own reader, so the parsed value feeds the jq steps without conversion.
//! Writing is jetflow's: it produces compact, valid JSON or fails, where jaq's writer would print
//! values JSON cannot represent (NaN, byte strings, non-string object keys) as they are.

use std::io::Write as _;

use jaq_json::{Num, Val};

/// Why a value could not be written as JSON.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WriteError {
    /// A byte string (from `tobytes` and the like) has no JSON form.
    #[error("a byte string is not JSON; convert it with tostring or @base64 first")]
    ByteString,
    /// JSON object keys are strings.
    #[error("object key {0} is not a string")]
    NonStringKey(String),
}

#[cfg(test)]
thread_local! {
    /// Payloads parsed on this thread, so tests can prove how often a message is parsed.
    pub(crate) static PARSES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Parses a payload as exactly one JSON value.
pub(crate) fn parse(payload: &[u8]) -> Result<Val, jaq_json::read::Error> {
    #[cfg(test)]
    PARSES.with(|p| p.set(p.get() + 1));
    jaq_json::read::parse_single(payload)
}

/// Writes `value` as compact JSON, appending to `out`.
///
/// NaN is written `null` and infinities as the largest finite doubles, as jq does, so that every
/// output is valid JSON.
pub(crate) fn write(out: &mut Vec<u8>, value: &Val) -> Result<(), WriteError> {
    match value {
        Val::Null => out.extend_from_slice(b"null"),
        Val::Bool(true) => out.extend_from_slice(b"true"),
        Val::Bool(false) => out.extend_from_slice(b"false"),
        Val::Num(Num::Float(f)) if f.is_nan() => out.extend_from_slice(b"null"),
        Val::Num(Num::Float(f)) if f.is_infinite() => {
            let max = if *f > 0.0 { f64::MAX } else { f64::MIN };
            write_display(out, &Num::Float(max));
        }
        Val::Num(n) => write_display(out, n),
        Val::TStr(s) => write_str(out, s),
        Val::BStr(_) => return Err(WriteError::ByteString),
        Val::Arr(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(out, item)?;
            }
            out.push(b']');
        }
        Val::Obj(map) => {
            out.push(b'{');
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                let Val::TStr(key) = k else {
                    return Err(WriteError::NonStringKey(k.to_string()));
                };
                write_str(out, key);
                out.push(b':');
                write(out, v)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

/// Serializes `value` into a fresh buffer.
pub(crate) fn to_vec(value: &Val) -> Result<Vec<u8>, WriteError> {
    let mut out = Vec::with_capacity(128);
    write(&mut out, value)?;
    Ok(out)
}

fn write_display(out: &mut Vec<u8>, n: &Num) {
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{n}");
}

/// Writes a JSON string with the escapes JSON requires; other bytes are copied as they are.
fn write_str(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'"');
    let mut start = 0;
    for (i, &c) in s.iter().enumerate() {
        let escape: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x00..=0x1f | 0x7f => b"",
            _ => continue,
        };
        out.extend_from_slice(&s[start..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{c:04x}");
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&s[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(text: &str) -> String {
        String::from_utf8(to_vec(&parse(text.as_bytes()).unwrap()).unwrap()).unwrap()
    }

    #[test]
    fn writes_compact_json_keeping_key_order() {
        assert_eq!(
            roundtrip(r#" { "b" : 1, "a" : [true, false, null, 1.5, "x"] } "#),
            r#"{"b":1,"a":[true,false,null,1.5,"x"]}"#
        );
    }

    #[test]
    fn escapes_control_characters_and_quotes() {
        assert_eq!(
            roundtrip(r#""a\"b\\c\n\t\u0001é""#),
            "\"a\\\"b\\\\c\\n\\t\\u0001é\""
        );
    }

    #[test]
    fn keeps_big_integers_and_decimals() {
        assert_eq!(
            roundtrip("[123456789012345678901234567890, 0.1, -7]"),
            "[123456789012345678901234567890,0.1,-7]"
        );
    }

    #[test]
    fn non_finite_numbers_become_valid_json() {
        let mut out = Vec::new();
        write(&mut out, &Val::Num(Num::Float(f64::NAN))).unwrap();
        out.push(b' ');
        write(&mut out, &Val::Num(Num::Float(f64::INFINITY))).unwrap();
        let text = String::from_utf8(out).unwrap();
        let mut parts = text.split(' ');
        assert_eq!(parts.next(), Some("null"));
        let inf: f64 = parts.next().unwrap().parse().unwrap();
        assert_eq!(inf, f64::MAX);
    }

    #[test]
    fn rejects_byte_strings() {
        let v = Val::byte_str(b"ab".to_vec());
        assert_eq!(to_vec(&v), Err(WriteError::ByteString));
    }

    #[test]
    fn rejects_invalid_json() {
        assert!(parse(b"{\"a\":").is_err());
        assert!(parse(b"not json").is_err());
        assert!(parse(b"1 2").is_err());
        assert!(parse(b"").is_err());
    }
}
