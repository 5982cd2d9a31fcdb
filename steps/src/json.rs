//! The payload as a JSON value: parsed once per message, written once when a `map` step
//! replaced it.
//!
//! Parsing builds jaq's values straight from the payload, so the parsed value feeds the jq steps
//! without conversion. Strings without escapes are slices of the payload's buffer (no copy); a
//! payload outside plain JSON (jq's extensions such as `NaN` or comments, or an error) is left
//! to jaq's reader, so what is accepted and the errors reported are jaq's.
//!
//! Nesting is bounded at [`MAX_DEPTH`] levels before any recursive reader sees the payload:
//! jetflow's reader stops there, and a payload it leaves to jaq's is measured first (see
//! [`crate::depth`]). Writing refuses values nested deeper, so it never recurses further.
//!
//! Writing is jetflow's: it produces compact, valid JSON (UTF-8) or fails, where jaq's writer
//! would print values JSON cannot represent (NaN, byte strings, non-string object keys,
//! invalid UTF-8) as they are. Outputs are written into a buffer kept per thread and split
//! off it, so a payload costs no allocation of its own.

use std::cell::RefCell;
use std::io::Write as _;

use bytes::{BufMut, Bytes, BytesMut};
use jaq_json::{Map, Num, Rc, Val};

use crate::depth::MAX_DEPTH;

/// Why a value could not be written as JSON.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WriteError {
    /// A byte string (from `tobytes` and the like) has no JSON form.
    #[error("a byte string is not JSON; convert it with tostring or @base64 first")]
    ByteString,
    /// JSON object keys are strings.
    #[error("object key {0} is not a string")]
    NonStringKey(String),
    /// The value nests arrays and objects deeper than [`MAX_DEPTH`] levels.
    #[error("arrays and objects are nested deeper than {MAX_DEPTH} levels, the steps' limit")]
    TooDeep,
}

/// Why a payload could not be read as one JSON value.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// The payload is not JSON (as jaq's reader reports it: where and what).
    #[error("payload is not JSON: {0}")]
    Syntax(#[source] jaq_json::read::Error),
    /// The payload nests arrays and objects deeper than [`MAX_DEPTH`] levels; it is refused
    /// before it is read, so that reading (and every step after it) stays within its stack.
    #[error("payload nests arrays and objects deeper than {MAX_DEPTH} levels, the steps' limit")]
    TooDeep,
}

#[cfg(test)]
thread_local! {
    /// Payloads parsed on this thread, so tests can prove how often a message is parsed.
    pub(crate) static PARSES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Parses a payload as exactly one JSON value; strings are slices of `payload`.
pub(crate) fn parse(payload: &Bytes) -> Result<Val, ParseError> {
    parse_in(payload, Some(payload))
}

/// Parses a payload as exactly one JSON value, copying its strings.
pub(crate) fn parse_slice(payload: &[u8]) -> Result<Val, ParseError> {
    parse_in(payload, None)
}

fn parse_in(payload: &[u8], owner: Option<&Bytes>) -> Result<Val, ParseError> {
    #[cfg(test)]
    PARSES.with(|p| p.set(p.get() + 1));
    let read = SCRATCH.with_borrow_mut(|scratch| {
        let mut reader = Reader {
            src: payload,
            owner,
            pos: 0,
            scratch,
            too_deep: false,
        };
        let value = reader.document();
        let too_deep = reader.too_deep;
        scratch.clear();
        (value, too_deep)
    });
    match read {
        (Some(value), _) => Ok(value),
        (None, true) => Err(ParseError::TooDeep),
        // jaq's reader recurses once per level: it gets only what nests within the limit.
        (None, false) if nests_deeper(payload, MAX_DEPTH) => Err(ParseError::TooDeep),
        (None, false) => {
            let value = jaq_json::read::parse_single(payload).map_err(ParseError::Syntax)?;
            Ok(if std::str::from_utf8(payload).is_ok() {
                value
            } else {
                valid_utf8(value)
            })
        }
    }
}

/// `text` with every sequence that is not UTF-8 replaced by U+FFFD.
fn replaced(text: &[u8]) -> Bytes {
    Bytes::from(String::from_utf8_lossy(text).into_owned())
}

/// `value` with the strings jaq's reader kept as they came (bytes that are not UTF-8)
/// replaced, as jetflow's reader does: two keys that differ only there become one, the first
/// place and the last value, so that the value read is the value written. Recurses once per
/// level: only for values within [`MAX_DEPTH`].
fn valid_utf8(value: Val) -> Val {
    match value {
        Val::TStr(s) if std::str::from_utf8(&s).is_err() => Val::TStr(Box::new(replaced(&s))),
        Val::Arr(items) => Val::Arr(Rc::new(items.iter().cloned().map(valid_utf8).collect())),
        Val::Obj(map) => Val::obj(
            map.iter()
                .map(|(k, v)| (valid_utf8(k.clone()), valid_utf8(v.clone())))
                .collect(),
        ),
        other => other,
    }
}

/// Whether the arrays and objects of `src`, read as jaq's reader reads it (strings, byte
/// strings `b"…"`, `#` comments to the end of the line), nest deeper than `limit` levels.
/// Counts brackets without checking them: where the text is not JSON, jaq's reader stops at
/// the first error, no deeper than the brackets counted before it.
fn nests_deeper(src: &[u8], limit: usize) -> bool {
    let mut depth = 0usize;
    let mut bytes = src.iter();
    while let Some(&c) = bytes.next() {
        match c {
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b'"' => {
                while let Some(&c) = bytes.next() {
                    match c {
                        b'"' => break,
                        b'\\' => {
                            bytes.next();
                        }
                        _ => {}
                    }
                }
            }
            b'#' => {
                for &c in bytes.by_ref() {
                    if c == b'\n' {
                        break;
                    }
                }
            }
            _ => {}
        }
    }
    false
}

thread_local! {
    /// Array items and object entries while they are read, kept per thread across payloads, so
    /// that each array and object is allocated once, at its final size.
    static SCRATCH: RefCell<Vec<(Val, Val)>> = const { RefCell::new(Vec::new()) };
}

/// A reader of plain JSON (RFC 8259) into jaq values. It gives up (`None`) on anything else,
/// and then jaq's reader decides (unless it stopped at the nesting limit); on plain JSON both produce the same value: integers as
/// machine or big integers, other numbers as decimals keeping their text, objects in key order
/// with a repeated key keeping its first place and last value.
struct Reader<'a> {
    src: &'a [u8],
    /// The buffer `src` is, when strings can be slices of it.
    owner: Option<&'a Bytes>,
    pos: usize,
    /// Items (as `(item, null)`) and entries of the arrays and objects being read, innermost
    /// last.
    scratch: &'a mut Vec<(Val, Val)>,
    /// Whether reading stopped at an array or object nested deeper than [`MAX_DEPTH`].
    too_deep: bool,
}

impl Reader<'_> {
    fn document(&mut self) -> Option<Val> {
        self.ws();
        let value = self.value(0)?;
        self.ws();
        (self.pos == self.src.len()).then_some(value)
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.src.get(self.pos) {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.src.get(self.pos).copied()
    }

    fn literal(&mut self, word: &[u8], value: Val) -> Option<Val> {
        self.src[self.pos..].starts_with(word).then(|| {
            self.pos += word.len();
            value
        })
    }

    fn value(&mut self, depth: usize) -> Option<Val> {
        match self.peek()? {
            b'n' => self.literal(b"null", Val::Null),
            b't' => self.literal(b"true", Val::Bool(true)),
            b'f' => self.literal(b"false", Val::Bool(false)),
            b'"' => self.string().map(|s| Val::TStr(Box::new(s))),
            b'-' | b'0'..=b'9' => self.number(),
            b'[' | b'{' if depth == MAX_DEPTH => {
                self.too_deep = true;
                None
            }
            b'[' => self.array(depth + 1),
            b'{' => self.object(depth + 1),
            _ => None,
        }
    }

    fn array(&mut self, depth: usize) -> Option<Val> {
        self.pos += 1;
        let start = self.scratch.len();
        self.ws();
        if self.peek()? == b']' {
            self.pos += 1;
            return Some(Val::Arr(Rc::new(Vec::new())));
        }
        loop {
            self.ws();
            let item = self.value(depth)?;
            self.scratch.push((item, Val::Null));
            self.ws();
            match self.peek()? {
                b',' => self.pos += 1,
                b']' => {
                    self.pos += 1;
                    let items = self.scratch.drain(start..).map(|(item, _)| item).collect();
                    return Some(Val::Arr(Rc::new(items)));
                }
                _ => return None,
            }
        }
    }

    fn object(&mut self, depth: usize) -> Option<Val> {
        self.pos += 1;
        let start = self.scratch.len();
        self.ws();
        if self.peek()? == b'}' {
            self.pos += 1;
            return Some(Val::obj(Map::default()));
        }
        loop {
            self.ws();
            if self.peek()? != b'"' {
                return None;
            }
            let key = Val::TStr(Box::new(self.string()?));
            self.ws();
            if self.peek()? != b':' {
                return None;
            }
            self.pos += 1;
            self.ws();
            let value = self.value(depth)?;
            self.scratch.push((key, value));
            self.ws();
            match self.peek()? {
                b',' => self.pos += 1,
                b'}' => {
                    self.pos += 1;
                    let entries = self.scratch.drain(start..);
                    let mut map = Map::with_capacity_and_hasher(entries.len(), Default::default());
                    map.extend(entries);
                    return Some(Val::obj(map));
                }
                _ => return None,
            }
        }
    }

    /// A string at `pos` (on its opening quote); raw bytes other than control characters are
    /// taken as they are, except that what is not UTF-8 becomes U+FFFD.
    fn string(&mut self) -> Option<Bytes> {
        self.pos += 1;
        let start = self.pos;
        let rest = &self.src[start..];
        let end = rest
            .iter()
            .position(|&c| matches!(c, b'"' | b'\\' | 0..=0x1f))?;
        if rest[end] == b'"' {
            self.pos = start + end + 1;
            let text = &rest[..end];
            if std::str::from_utf8(text).is_err() {
                return Some(replaced(text));
            }
            return Some(self.bytes(start, start + end));
        }
        if rest[end] != b'\\' {
            return None;
        }
        let mut out = Vec::with_capacity(end + 16);
        out.extend_from_slice(&rest[..end]);
        self.pos = start + end;
        loop {
            match self.peek()? {
                b'"' => {
                    self.pos += 1;
                    return Some(match String::from_utf8(out) {
                        Ok(text) => Bytes::from(text),
                        Err(e) => replaced(e.as_bytes()),
                    });
                }
                b'\\' => {
                    self.pos += 1;
                    self.escape(&mut out)?;
                }
                0..=0x1f => return None,
                c => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    fn escape(&mut self, out: &mut Vec<u8>) -> Option<()> {
        let c = self.peek()?;
        self.pos += 1;
        let byte = match c {
            b'"' => b'"',
            b'\\' => b'\\',
            b'/' => b'/',
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => {
                let code = match self.hex4()? {
                    high @ 0xd800..=0xdbff => {
                        if !self.src[self.pos..].starts_with(b"\\u") {
                            return None;
                        }
                        self.pos += 2;
                        let low = self.hex4()?;
                        if !(0xdc00..=0xdfff).contains(&low) {
                            return None;
                        }
                        0x10000 + (high - 0xd800) * 0x400 + (low - 0xdc00)
                    }
                    code => code,
                };
                let c = char::from_u32(code)?;
                out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                return Some(());
            }
            _ => return None,
        };
        out.push(byte);
        Some(())
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits = self.src.get(self.pos..self.pos + 4)?;
        self.pos += 4;
        digits
            .iter()
            .try_fold(0, |acc, &d| Some(acc * 16 + (d as char).to_digit(16)?))
    }

    fn number(&mut self) -> Option<Val> {
        let start = self.pos;
        let digits = |r: &mut Self| {
            let from = r.pos;
            while let Some(b'0'..=b'9') = r.peek() {
                r.pos += 1;
            }
            r.pos > from
        };
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek()? {
            b'0' => {
                self.pos += 1;
                if let Some(b'0'..=b'9') = self.peek() {
                    return None;
                }
            }
            b'1'..=b'9' => {
                digits(self);
            }
            _ => return None,
        }
        let mut integer = true;
        if self.peek() == Some(b'.') {
            self.pos += 1;
            integer = false;
            if !digits(self) {
                return None;
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            integer = false;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if !digits(self) {
                return None;
            }
        }
        // Only ASCII digits and signs were read.
        let text = std::str::from_utf8(&self.src[start..self.pos]).ok()?;
        Some(Val::Num(if integer {
            Num::from_str_radix(text, 10)?
        } else {
            Num::Dec(Rc::new(text.to_owned()))
        }))
    }

    fn bytes(&self, start: usize, end: usize) -> Bytes {
        match self.owner {
            Some(owner) => owner.slice(start..end),
            None => Bytes::copy_from_slice(&self.src[start..end]),
        }
    }
}

thread_local! {
    /// Where this thread writes outputs; each output is split off it, so the allocation is
    /// shared by many outputs and freed when the last of them is dropped.
    static OUT: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// The space reserved at once for outputs written on one thread.
const OUT_CHUNK: usize = 16 * 1024;

/// Writes `value` as compact JSON, appending to `out`.
///
/// NaN is written `null` and infinities as the largest finite doubles, as jq does, so that every
/// output is valid JSON. A value nested deeper than [`MAX_DEPTH`] levels is refused (and may
/// have been written in part).
pub(crate) fn write(out: &mut impl BufMut, value: &Val) -> Result<(), WriteError> {
    write_at(out, value, 0)
}

/// [`write`] for a value nested `depth` levels down.
fn write_at(out: &mut impl BufMut, value: &Val, depth: usize) -> Result<(), WriteError> {
    if depth == MAX_DEPTH && matches!(value, Val::Arr(_) | Val::Obj(_)) {
        return Err(WriteError::TooDeep);
    }
    match value {
        Val::Null => out.put_slice(b"null"),
        Val::Bool(true) => out.put_slice(b"true"),
        Val::Bool(false) => out.put_slice(b"false"),
        Val::Num(Num::Float(f)) if f.is_nan() => out.put_slice(b"null"),
        Val::Num(Num::Float(f)) if f.is_infinite() => {
            let max = if *f > 0.0 { f64::MAX } else { f64::MIN };
            write_display(out, &Num::Float(max));
        }
        // A decimal keeps its text as read; jaq's reader accepts some JSON does not (`00.1`).
        Val::Num(Num::Dec(text)) if !is_json_number(text) => {
            write_at(out, &Val::Num(Num::from_dec_str(text)), depth)?;
        }
        Val::Num(n) => write_display(out, n),
        Val::TStr(s) => write_str(out, s),
        Val::BStr(_) => return Err(WriteError::ByteString),
        Val::Arr(items) => {
            out.put_u8(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.put_u8(b',');
                }
                write_at(out, item, depth + 1)?;
            }
            out.put_u8(b']');
        }
        Val::Obj(map) => {
            out.put_u8(b'{');
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.put_u8(b',');
                }
                let Val::TStr(key) = k else {
                    // The key may be nested deeper than this value allows: printed cut.
                    return Err(WriteError::NonStringKey(crate::depth::display_cut(k, 64).0));
                };
                write_str(out, key);
                out.put_u8(b':');
                write_at(out, v, depth + 1)?;
            }
            out.put_u8(b'}');
        }
    }
    Ok(())
}

/// Whether `text` is a number as JSON writes them.
fn is_json_number(text: &str) -> bool {
    let mut scratch = Vec::new();
    let mut reader = Reader {
        src: text.as_bytes(),
        owner: None,
        pos: 0,
        scratch: &mut scratch,
        too_deep: false,
    };
    reader.number().is_some() && reader.pos == text.len()
}

/// Serializes `value` as compact JSON.
pub(crate) fn to_bytes(value: &Val) -> Result<Bytes, WriteError> {
    OUT.with_borrow_mut(|out| {
        if out.capacity() < 256 {
            out.reserve(OUT_CHUNK);
        }
        let written = write(out, value);
        let bytes = out.split().freeze();
        written.map(|()| bytes)
    })
}

fn write_display(out: &mut impl BufMut, n: &Num) {
    // Writing into memory cannot fail.
    let _ = write!(out.writer(), "{n}");
}

/// Writes a JSON string with the escapes JSON requires; other characters are copied as they
/// are. JSON text is UTF-8: bytes that are not (kept by jaq's reader from a payload that was
/// not) are written as U+FFFD, the replacement character.
fn write_str(out: &mut impl BufMut, s: &[u8]) {
    let s = String::from_utf8_lossy(s);
    let s = s.as_bytes();
    out.put_u8(b'"');
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
        out.put_slice(&s[start..i]);
        if escape.is_empty() {
            let _ = write!(out.writer(), "\\u{c:04x}");
        } else {
            out.put_slice(escape);
        }
        start = i + 1;
    }
    out.put_slice(&s[start..]);
    out.put_u8(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(text: &str) -> String {
        let value = parse(&Bytes::copy_from_slice(text.as_bytes())).unwrap();
        String::from_utf8(to_bytes(&value).unwrap().to_vec()).unwrap()
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
        out.put_u8(b' ');
        write(&mut out, &Val::Num(Num::Float(f64::INFINITY))).unwrap();
        let text = String::from_utf8(out).unwrap();
        let mut parts = text.split(' ');
        assert_eq!(parts.next(), Some("null"));
        let inf: f64 = parts.next().unwrap().parse().unwrap();
        assert_eq!(inf, f64::MAX);
    }

    /// Keys that differ only in bytes that are not UTF-8 are one key once read, in both
    /// readers, so that what is written reads back the same.
    #[test]
    fn reads_invalid_utf8_as_replacement_characters() {
        for payload in [
            &b"{\"\xfc\":1,\"\xfd\":2,\"b\xff\\n\":3}"[..],
            &b"{\"\xfc\":1,\"\xfd\":2,\"b\xff\\n\":3} # jaq's reader"[..],
        ] {
            let value = parse_slice(payload).unwrap();
            let written = to_bytes(&value).unwrap();
            assert_eq!(
                std::str::from_utf8(&written).unwrap(),
                "{\"\u{fffd}\":2,\"b\u{fffd}\\n\":3}"
            );
            assert_eq!(parse_slice(&written).unwrap(), value);
        }
    }

    #[test]
    fn writes_invalid_utf8_as_replacement_characters() {
        let value = parse_slice(b"[\"a\xffb\", \"\xc3\"]").unwrap();
        let written = to_bytes(&value).unwrap();
        assert_eq!(
            std::str::from_utf8(&written).unwrap(),
            "[\"a\u{fffd}b\",\"\u{fffd}\"]"
        );
    }

    /// jaq's reader keeps the text of decimals JSON does not allow; they are written as the
    /// number they stand for.
    #[test]
    fn writes_decimals_outside_json_as_numbers() {
        let value = parse_slice(b"[0,  1e40 ,00.1, 1E-5]").unwrap();
        assert_eq!(&to_bytes(&value).unwrap()[..], b"[0,1e40,0.1,1E-5]");
        assert!(is_json_number("-0.5e+3"));
        for bad in ["00.1", "01", ".5", "1.", "+1", "1e", "", "-", "0x1", "1 "] {
            assert!(!is_json_number(bad), "{bad}");
        }
    }

    #[test]
    fn rejects_byte_strings() {
        let v = Val::byte_str(b"ab".to_vec());
        assert_eq!(to_bytes(&v), Err(WriteError::ByteString));
        // A failed write leaves nothing behind for the next output.
        assert_eq!(&to_bytes(&Val::Null).unwrap()[..], b"null");
    }

    #[test]
    fn rejects_invalid_json() {
        assert!(parse_slice(b"{\"a\":").is_err());
        assert!(parse_slice(b"not json").is_err());
        assert!(parse_slice(b"1 2").is_err());
        assert!(parse_slice(b"").is_err());
    }

    /// The reader yields what jaq's reader yields, value for value (numbers of the same kind,
    /// strings with the same bytes), and jaq's errors where the input is not JSON.
    #[test]
    fn reads_as_jaq_reads() {
        let inputs: &[&[u8]] = &[
            b"null",
            b" true ",
            b"\tfalse\r\n",
            b"0",
            b"-0",
            b"42",
            b"-17",
            b"9223372036854775807",
            b"9223372036854775808",
            b"-123456789012345678901234567890",
            b"1.5",
            b"-0.25",
            b"12.50",
            b"1e5",
            b"1E+5",
            b"-2.5e-3",
            b"0.1",
            br#""""#,
            br#""plain""#,
            br#""a\"b\\c\/d\b\f\n\r\t""#,
            br#""\u0041\u00e9\u20ac\ud83d\ude00\u0000""#,
            "\"é ☃ 😀\"".as_bytes(),
            b"[]",
            b"[ ]",
            b"[1,[2,[3,{}]],\"x\"]",
            b"{}",
            br#"{"a":1,"b":{"c":[true,null]},"a":2}"#,
            br#" { "k" : "v" , "n" : -1.0e10 } "#,
            // Outside plain JSON: jaq's reader decides.
            b"NaN",
            b"[Infinity, -Infinity]",
            b"# comment\n1",
            b"{1: 2}",
            b"01",
            b"+1",
            b"[1,]",
            br#"b"bytes""#,
            br#""\ud800""#,
            br#""\udc00""#,
            br#""\ud800\u0041""#,
            b"\"tab\tinside\"",
            b"\"unterminated",
            b"{\"a\" 1}",
            b"1.",
            b".5",
            b"-",
            b"1e",
            b"tru",
            b"[1 2]",
            b"",
            b"   ",
            b"\"\\x\"",
        ];
        let syntax = |e: ParseError| match e {
            ParseError::Syntax(e) => e.to_string(),
            ParseError::TooDeep => panic!("not too deep"),
        };
        for input in inputs {
            let bytes = Bytes::copy_from_slice(input);
            let ours = parse(&bytes).map_err(syntax);
            let theirs = jaq_json::read::parse_single(input).map_err(|e| e.to_string());
            assert_eq!(
                format!("{ours:?}"),
                format!("{theirs:?}"),
                "{:?}",
                String::from_utf8_lossy(input)
            );
            let copied = parse_slice(input).map_err(syntax);
            assert_eq!(format!("{copied:?}"), format!("{theirs:?}"));
        }
        let deepest = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert_eq!(
            format!("{:?}", parse_slice(deepest.as_bytes()).unwrap()),
            format!(
                "{:?}",
                jaq_json::read::parse_single(deepest.as_bytes()).unwrap()
            )
        );
    }

    fn too_deep(payload: &[u8]) -> bool {
        matches!(parse_slice(payload), Err(ParseError::TooDeep))
    }

    /// Nesting past the limit is refused by jetflow's reader, and measured before jaq's
    /// reader (which recurses) gets a payload outside plain JSON.
    #[test]
    fn refuses_nesting_deeper_than_the_limit() {
        let nest = |levels: usize, open: &str, inner: &str, close: &str| {
            format!("{}{inner}{}", open.repeat(levels), close.repeat(levels))
        };
        // Plain JSON: arrays, objects, both, cut short.
        assert!(too_deep(nest(MAX_DEPTH + 1, "[", "", "]").as_bytes()));
        assert!(too_deep(
            nest(MAX_DEPTH + 1, r#"{"a":"#, "1", "}").as_bytes()
        ));
        assert!(too_deep(
            nest(MAX_DEPTH / 2 + 1, r#"[{"a":"#, "1", "}]").as_bytes()
        ));
        assert!(too_deep("[".repeat(200_000).as_bytes()));
        assert!(!too_deep(nest(MAX_DEPTH, r#"{"a":"#, "1", "}").as_bytes()));
        // Outside plain JSON, jaq's extensions inside: measured, then refused.
        assert!(too_deep(nest(MAX_DEPTH + 1, "[", "NaN", "]").as_bytes()));
        assert!(too_deep(
            format!(
                "# c
{}",
                "[".repeat(200_000)
            )
            .as_bytes()
        ));
        assert!(too_deep(
            format!("[NaN,{}", r#"{"a":"#.repeat(200_000)).as_bytes()
        ));
        assert!(!too_deep(nest(MAX_DEPTH, "[", "NaN", "]").as_bytes()));
        // Brackets in strings, byte strings and comments are not nesting.
        let in_text = format!(
            "[NaN, \"{0}\", b\"{0}\", \"\\\"{0}\" # {0}\n]",
            "[".repeat(MAX_DEPTH + 1)
        );
        assert!(parse_slice(in_text.as_bytes()).is_ok(), "{in_text}");
        assert_eq!(
            ParseError::TooDeep.to_string(),
            format!(
                "payload nests arrays and objects deeper than {MAX_DEPTH} levels, the steps' limit"
            )
        );
    }

    #[test]
    fn refuses_to_write_values_deeper_than_the_limit() {
        let mut value = Val::Null;
        for _ in 0..MAX_DEPTH {
            value = Val::Arr(Rc::new(vec![value]));
        }
        let written = to_bytes(&value).unwrap();
        assert_eq!(written.len(), 2 * MAX_DEPTH + 4);
        let deeper = Val::obj([(Val::from("k".to_owned()), value)].into_iter().collect());
        assert_eq!(to_bytes(&deeper), Err(WriteError::TooDeep));
        assert_eq!(&to_bytes(&Val::Null).unwrap()[..], b"null");
    }

    #[test]
    fn strings_without_escapes_are_slices_of_the_payload() {
        let payload = Bytes::from_static(br#"{"name":"Ada"}"#);
        let Val::Obj(map) = parse(&payload).unwrap() else {
            panic!("an object");
        };
        let (Val::TStr(key), Val::TStr(value)) = map.iter().next().unwrap() else {
            panic!("strings");
        };
        assert_eq!(key.as_ptr(), payload[2..].as_ptr());
        assert_eq!(value.as_ptr(), payload[9..].as_ptr());
    }

    #[test]
    fn outputs_written_one_after_another_stay_apart() {
        let values: Vec<Val> = (0..2000)
            .map(|i| parse_slice(format!(r#"{{"i":{i},"s":"{}"}}"#, "x".repeat(i % 50)).as_bytes()))
            .collect::<Result<_, _>>()
            .unwrap();
        let written: Vec<Bytes> = values.iter().map(|v| to_bytes(v).unwrap()).collect();
        for (i, bytes) in written.iter().enumerate() {
            let expected = format!(r#"{{"i":{i},"s":"{}"}}"#, "x".repeat(i % 50));
            assert_eq!(&bytes[..], expected.as_bytes());
        }
    }
}
