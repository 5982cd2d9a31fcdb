//! The nesting limit of values in the steps, and the means to handle a value past it without
//! recursion.
//!
//! Reading, writing, printing, comparing and dropping a jq value all recurse once per level
//! of nesting, in jetflow and in jaq, on the evaluator thread's fixed stack. A payload of
//! 200,000 `[` would exhaust it and abort the whole worker. So every value the steps take in
//! or pass on nests at most [`MAX_DEPTH`] levels of arrays and objects: a payload nested
//! deeper fails to parse (kind `parse`), an expression output nested deeper fails the
//! message (kind `eval`), and neither is ever handed to code that recurses. The few places
//! that must touch such a value do so here, iteratively: measuring it, dropping it, and
//! printing the start of it for an error message. (What jaq does inside one expression with a
//! deep value the expression built is out of reach: `reduce range(1e5) as $i (0; [.]) |
//! length` drops it in jaq, recursively.)

use std::fmt::{self, Write as _};

use jaq_json::{Rc, Val};

/// The deepest nesting of arrays and objects a payload, or a value a step yields, may have;
/// `[]` is one level, `[[]]` two. Deeper fails the message.
pub const MAX_DEPTH: usize = 512;

/// Whether `value` nests arrays and objects deeper than `limit` levels; looks no deeper than
/// `limit + 1` levels, and does not recurse.
pub(crate) fn exceeds(value: &Val, limit: usize) -> bool {
    // The children still to visit of each array and object on the way down: the stack's
    // length is the depth of the innermost.
    let mut stack = Vec::new();
    if let Some(children) = children(value) {
        stack.push(children);
    }
    if stack.len() > limit {
        return true;
    }
    while let Some(siblings) = stack.last_mut() {
        match siblings.next() {
            None => {
                stack.pop();
            }
            Some(child) => {
                if let Some(children) = children(child) {
                    if stack.len() == limit {
                        return true;
                    }
                    stack.push(children);
                }
            }
        }
    }
    false
}

/// The items of an array, or the keys and values of an object; `None` for other values.
fn children(value: &Val) -> Option<Box<dyn Iterator<Item = &Val> + '_>> {
    match value {
        Val::Arr(items) => Some(Box::new(items.iter())),
        Val::Obj(map) => Some(Box::new(map.iter().flat_map(|(k, v)| [k, v]))),
        _ => None,
    }
}

/// Drops `value` without recursing: the arrays and objects it alone owns are taken apart
/// level by level on the heap. For values that may be deeper than [`MAX_DEPTH`]; shallower
/// ones may be dropped as usual.
pub(crate) fn drop_deep(value: Val) {
    let mut pending = vec![value];
    while let Some(value) = pending.pop() {
        match value {
            Val::Arr(items) => {
                // Shared with another owner: dropping this handle only counts down.
                if let Ok(items) = Rc::try_unwrap(items) {
                    pending.extend(items);
                }
            }
            Val::Obj(map) => {
                if let Ok(map) = Rc::try_unwrap(map) {
                    for (k, v) in map {
                        pending.push(k);
                        pending.push(v);
                    }
                }
            }
            _ => {}
        }
    }
}

/// `value` as text (as jq prints it), cut after `max` bytes with `…`, and whether it was cut.
///
/// jq's printer writes a bracket before it descends into an array or object, so stopping the
/// output after `max` bytes also stops its recursion within `max` levels: this is safe on
/// values of any depth.
pub(crate) fn display_cut(value: &impl fmt::Display, max: usize) -> (String, bool) {
    let mut out = Text::new(max, None);
    // The writer's only error is its own stop.
    let _ = write!(out, "{value}");
    let cut = out.cut;
    (out.finish(), cut)
}

/// `value` as text, as [`display_cut`] gives it, or `None` when what it prints nests arrays
/// and objects deeper than `limit` levels. Unlike [`display_cut`] it prints the whole value
/// (keeping only `max` bytes) to find out; printing stops, so its recursion too, once past the
/// limit.
pub(crate) fn display_within(
    value: &impl fmt::Display,
    max: usize,
    limit: usize,
) -> Option<String> {
    let mut out = Text::new(max, Some(limit));
    let _ = write!(out, "{value}");
    (!out.too_deep).then(|| out.finish())
}

/// A writer that keeps the first `max` bytes (whole characters). Without a depth limit it
/// fails past them, which stops the formatting; with one, it reads on, following the nesting
/// of the JSON text written (brackets outside strings), and fails once past the limit.
struct Text {
    text: String,
    max: usize,
    cut: bool,
    /// The depth limit, and the state of the text written so far.
    limit: Option<usize>,
    depth: usize,
    in_string: bool,
    escaped: bool,
    too_deep: bool,
}

impl Text {
    fn new(max: usize, limit: Option<usize>) -> Self {
        Self {
            text: String::new(),
            max,
            cut: false,
            limit,
            depth: 0,
            in_string: false,
            escaped: false,
            too_deep: false,
        }
    }

    fn finish(mut self) -> String {
        if self.cut {
            self.text.push('…');
        }
        self.text
    }

    fn follow(&mut self, s: &str, limit: usize) -> fmt::Result {
        for c in s.bytes() {
            if self.in_string {
                match (self.escaped, c) {
                    (true, _) => self.escaped = false,
                    (false, b'\\') => self.escaped = true,
                    (false, b'"') => self.in_string = false,
                    _ => {}
                }
                continue;
            }
            match c {
                b'"' => self.in_string = true,
                b'[' | b'{' => {
                    self.depth += 1;
                    if self.depth > limit {
                        self.too_deep = true;
                        return Err(fmt::Error);
                    }
                }
                b']' | b'}' => self.depth = self.depth.saturating_sub(1),
                _ => {}
            }
        }
        Ok(())
    }
}

impl fmt::Write for Text {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if let Some(limit) = self.limit {
            self.follow(s, limit)?;
        }
        if self.cut {
            return Ok(());
        }
        let room = self.max - self.text.len();
        if s.len() <= room {
            self.text.push_str(s);
            return Ok(());
        }
        let mut end = room;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.text.push_str(&s[..end]);
        self.cut = true;
        match self.limit {
            Some(_) => Ok(()),
            None => Err(fmt::Error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `[[…[0]…]]` with `levels` arrays, built without recursion.
    pub(crate) fn nested(levels: usize) -> Val {
        let mut value = Val::from(0usize);
        for _ in 0..levels {
            value = Val::Arr(Rc::new(vec![value]));
        }
        value
    }

    #[test]
    fn measures_depth_up_to_the_limit() {
        assert!(!exceeds(&Val::Null, 0));
        assert!(exceeds(&nested(1), 0));
        assert!(!exceeds(&nested(1), 1));
        assert!(!exceeds(&nested(MAX_DEPTH), MAX_DEPTH));
        assert!(exceeds(&nested(MAX_DEPTH + 1), MAX_DEPTH));
        // Empty arrays and objects count as a level; object keys and values are looked at.
        let empty = Val::Arr(Rc::new(vec![Val::Arr(Rc::new(Vec::new()))]));
        assert!(exceeds(&empty, 1));
        assert!(!exceeds(&empty, 2));
        let in_object = Val::obj(
            [(Val::from("k".to_owned()), nested(3))]
                .into_iter()
                .collect(),
        );
        assert!(exceeds(&in_object, 3));
        assert!(!exceeds(&in_object, 4));
        let in_key = Val::obj([(nested(3), Val::Null)].into_iter().collect());
        assert!(exceeds(&in_key, 3));
        // A wide value is not a deep one.
        let wide = Val::Arr(Rc::new(vec![nested(2); 10_000]));
        assert!(!exceeds(&wide, 3));
        assert!(exceeds(&wide, 2));
    }

    /// A million levels: each of these would overflow any thread's stack if it recursed.
    #[test]
    fn handles_values_far_deeper_than_a_stack_holds() {
        let deep = nested(1_000_000);
        assert!(exceeds(&deep, MAX_DEPTH));
        let (text, cut) = display_cut(&deep, 100);
        assert!(cut);
        assert_eq!(text, format!("{}…", "[".repeat(100)));
        // A part shared with another owner stays whole.
        let Val::Arr(outer) = &deep else {
            panic!("an array")
        };
        let shared = outer[0].clone();
        drop_deep(deep);
        assert!(exceeds(&shared, MAX_DEPTH));
        drop_deep(shared);
    }

    #[test]
    fn display_cut_keeps_short_text_and_whole_characters() {
        assert_eq!(display_cut(&"abc", 3), ("abc".to_owned(), false));
        assert_eq!(display_cut(&"abcd", 3), ("abc…".to_owned(), true));
        assert_eq!(display_cut(&"aé", 2), ("a…".to_owned(), true));
    }

    #[test]
    fn display_within_reads_to_the_end_and_stops_past_the_limit() {
        let wide_then_deep = Val::Arr(Rc::new(vec![
            Val::from("[[[[".to_owned()),
            Val::from(7usize),
            nested(1_000_000),
        ]));
        assert_eq!(display_within(&wide_then_deep, 1000, MAX_DEPTH), None);
        let text = display_within(&nested(MAX_DEPTH), 5, MAX_DEPTH).unwrap();
        assert_eq!(text, "[[[[[…");
        let quoted = Val::from(r#"a"[\"#.to_owned());
        assert_eq!(
            display_within(&Val::Arr(Rc::new(vec![quoted])), 100, 1).as_deref(),
            Some(r#"["a\"[\\"]"#)
        );
        drop_deep(wide_then_deep);
    }
}
