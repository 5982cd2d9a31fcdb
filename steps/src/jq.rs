//! jq expressions, compiled once with the jaq crates and run per message.
//!
//! Expressions see three global variables: `$subject` (string), `$headers` (object of header
//! name to its first value, keys sorted) and `$seq` (the source stream sequence, a number).
//! Filters whose results depend on the clock, the environment or the process (`now`, `env`,
//! `$ENV`, `localtime`, `strflocaltime`, `halt`, `halt_error`, `input`, `inputs`, `stderr`)
//! are left out: steps must be deterministic so that a replayed message yields the same output
//! and the sink can deduplicate it. Using one is a compile error ("undefined filter").

use jaq_core::compile::Undefined;
use jaq_core::data::JustLut;
use jaq_core::load::{self, Arena, File, Loader};
use jaq_core::{Compiler, Ctx, Vars};
use jaq_json::Val;

use crate::depth;
use crate::simple::Simple;

type Data = JustLut<Val>;

/// The names of the global variables, in the order [`Globals::into_vars`] supplies them.
const GLOBALS: [&str; 3] = ["$subject", "$headers", "$seq"];

/// Filters (native or defined in jq) left out because their output is not a function of the
/// message, or because they act on the process.
const NON_DETERMINISTIC: &[&str] = &[
    "now",
    "env",
    "localtime",
    "strflocaltime",
    "halt",
    "halt_error",
    "input",
    "inputs",
    "stderr",
    "stderr_empty",
];

/// Values of the global variables for one run.
pub(crate) struct Globals {
    pub subject: Val,
    pub headers: Val,
    pub seq: Val,
}

impl Globals {
    fn into_vars(self) -> Vars<Val> {
        Vars::new([self.subject, self.headers, self.seq])
    }
}

/// A compiled jq expression.
pub(crate) struct Jq {
    filter: jaq_core::Filter<Data>,
    /// The expression's shortcut, when it is of the simple kind ([`Simple`]).
    simple: Option<Simple>,
    /// Whether the expression mentions `$subject` or `$headers`: building those values costs
    /// allocations per message, so they are skipped (left `null`) for expressions that never
    /// read them. A mention inside a string literal only costs the allocation.
    pub uses_subject: bool,
    pub uses_headers: bool,
}

impl std::fmt::Debug for Jq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jq").finish_non_exhaustive()
    }
}

impl Jq {
    /// Compiles `code`; the error quotes what jaq reported.
    pub fn compile(code: &str) -> Result<Jq, JqError> {
        let defs = jaq_core::defs()
            .chain(jaq_std::defs())
            .chain(jaq_json::defs())
            .filter(|def| !NON_DETERMINISTIC.contains(&def.name));
        let funs = jaq_core::funs()
            .chain(jaq_std::funs())
            .chain(jaq_json::funs())
            .filter(|(name, _, _)| !NON_DETERMINISTIC.contains(name));
        let arena = Arena::default();
        let modules = Loader::new(defs)
            .load(&arena, File { code, path: () })
            .map_err(|errs| load_errors(code, errs))?;
        let filter = Compiler::default()
            .with_funs(funs)
            .with_global_vars(GLOBALS)
            .compile(modules)
            .map_err(|errs| compile_errors(code, errs))?;
        Ok(Jq {
            filter,
            simple: Simple::of(code),
            uses_subject: code.contains("$subject"),
            uses_headers: code.contains("$headers"),
        })
    }

    /// Runs the expression on `input`; outputs come lazily, in jq's order.
    pub fn run(&self, input: Val, globals: Globals) -> impl Iterator<Item = Result<Val, String>> {
        let (first, rest) = match self.simple.as_ref().and_then(|s| s.eval(&input, &globals)) {
            Some(value) => (Some(Ok(value)), None),
            None => (None, Some(self.run_jaq(input, globals))),
        };
        first.into_iter().chain(rest.into_iter().flatten())
    }

    /// Runs the expression in jaq.
    pub(crate) fn run_jaq(
        &self,
        input: Val,
        globals: Globals,
    ) -> impl Iterator<Item = Result<Val, String>> {
        let ctx = Ctx::<Data>::new(&self.filter.lut, globals.into_vars());
        self.filter.id.run((ctx, input)).map(|r| {
            r.map_err(|exn| match exn.get_err() {
                Ok(e) => error_text(e),
                // `halt` is not compiled in, and the other exceptions do not escape a main
                // filter; should one come, it is an error of this message, not of the process.
                Err(_) => "the expression stopped without a value".to_owned(),
            })
        })
    }
}

/// The text of a jq error: a string error (`error("x")` or jaq's own messages) reads as its
/// text, any other value as JSON.
///
/// The values an error carries may be nested deeper than anything the steps take in (built by
/// the expression itself), and printing or dropping one recurses once per level. So the error
/// is printed first through a writer that stops past [`depth::MAX_DEPTH`] levels; only an
/// error within the limit is then taken apart and dropped as usual. One past it is never
/// dropped (jaq gives no way to take its values out without recursion): it is left allocated,
/// the price of not exhausting the thread's stack.
fn error_text(e: jaq_core::Error<Val>) -> String {
    // One byte past the longest error kept, so that a cut shows.
    let max = crate::MAX_ERROR_LEN + 1;
    let Some(text) = depth::display_within(&e, max, depth::MAX_DEPTH) else {
        let (text, _) = depth::display_cut(&e, 256);
        std::mem::forget(e);
        return format!(
            "error holding a value nested deeper than {} levels, the steps' limit: {text}",
            depth::MAX_DEPTH
        );
    };
    match e.into_val() {
        Val::TStr(s) => String::from_utf8_lossy(&s).into_owned(),
        // Printed above within the limit, as this value prints.
        _ => text,
    }
}

/// A jq expression that does not compile.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JqError {
    /// The expression does not parse: what jaq expected where, one entry per problem.
    #[error("jq syntax error: {}", joined(.problems))]
    Syntax {
        /// The problems, in jaq's order.
        problems: Vec<SyntaxProblem>,
    },
    /// The expression names filters or variables that are not defined (or left out).
    #[error("jq error: {}", joined(.names))]
    Undefined {
        /// The names, in jaq's order.
        names: Vec<UndefinedName>,
    },
}

/// One problem jaq found parsing an expression.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SyntaxProblem {
    /// jaq expected something else at a place.
    #[error("expected {expected} {at} {}", near_text(.near))]
    Expected {
        /// What jaq expected.
        expected: String,
        /// Where.
        at: Position,
        /// Up to 20 characters of what was found instead; `None` at the end of the expression.
        near: Option<String>,
    },
    /// A module the expression includes could not be loaded.
    #[error("cannot load module {path:?}: {error}")]
    Module {
        /// The module's path.
        path: String,
        /// jaq's error.
        error: String,
    },
}

/// A filter or variable that is not defined.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("undefined {what} {at}{hint}")]
pub struct UndefinedName {
    /// `filter name/arity`, `variable $name`, and the like.
    pub what: String,
    /// Where it is used.
    pub at: Position,
    /// Why it may be missing, when jetflow knows (left out, or not one of the variables).
    pub hint: &'static str,
}

/// A place in a jq expression.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Position {
    /// The 1-based column (in characters) in the expression.
    Column(usize),
    /// Inside a definition of jq's standard library.
    Library,
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Column(col) => write!(f, "at column {col}"),
            Self::Library => f.write_str("in a library definition"),
        }
    }
}

fn joined<T: std::fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

fn near_text(near: &Option<String>) -> String {
    match near {
        Some(snippet) => format!("near {snippet:?}"),
        None => "at the end".to_owned(),
    }
}

/// Where `part` (a slice of `code`) starts.
fn at(code: &str, part: &str) -> Position {
    let offset = part.as_ptr() as usize;
    let base = code.as_ptr() as usize;
    if offset >= base && offset <= base + code.len() {
        Position::Column(code[..offset - base].chars().count() + 1)
    } else {
        Position::Library
    }
}

fn near(part: &str) -> Option<String> {
    let snippet: String = part.chars().take(20).collect();
    (!snippet.is_empty()).then_some(snippet)
}

fn load_errors(code: &str, errs: load::Errors<&str, ()>) -> JqError {
    let mut problems = Vec::new();
    for (_file, err) in errs {
        match err {
            load::Error::Io(items) => {
                for (path, error) in items {
                    problems.push(SyntaxProblem::Module {
                        path: path.to_string(),
                        error: error.to_string(),
                    });
                }
            }
            load::Error::Lex(items) => {
                for (expect, found) in items {
                    problems.push(SyntaxProblem::Expected {
                        expected: expect.as_str().to_owned(),
                        at: at(code, found),
                        near: near(found),
                    });
                }
            }
            load::Error::Parse(items) => {
                for (expect, found) in items {
                    problems.push(SyntaxProblem::Expected {
                        expected: expect.as_str().to_owned(),
                        at: at(code, found),
                        near: near(found),
                    });
                }
            }
        }
    }
    JqError::Syntax { problems }
}

fn compile_errors(code: &str, errs: jaq_core::compile::Errors<&str, ()>) -> JqError {
    let mut names = Vec::new();
    for (_file, items) in errs {
        for (name, undefined) in items {
            let what = match &undefined {
                Undefined::Filter(arity) => format!("filter {name}/{arity}"),
                other => format!("{} {name}", other.as_str()),
            };
            let hint = match name {
                "$ENV" => " (left out: steps must be deterministic)",
                _ if NON_DETERMINISTIC.contains(&name) => {
                    " (left out: steps must be deterministic)"
                }
                _ if name.starts_with('$') => " (the variables are $subject, $headers and $seq)",
                _ => "",
            };
            names.push(UndefinedName {
                what,
                at: at(code, name),
                hint,
            });
        }
    }
    JqError::Undefined { names }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn globals() -> Globals {
        Globals {
            subject: Val::from("orders.eu.1".to_owned()),
            headers: Val::obj(Default::default()),
            seq: Val::from(7usize),
        }
    }

    fn run(code: &str, input: &str) -> Vec<Result<String, String>> {
        let jq = Jq::compile(code).unwrap();
        let input = jaq_json::read::parse_single(input.as_bytes()).unwrap();
        jq.run(input, globals())
            .map(|r| r.map(|v| v.to_string()))
            .collect()
    }

    #[test]
    fn runs_an_expression_with_variables() {
        assert_eq!(
            run("{a: .x, s: $subject, q: $seq}", r#"{"x": 1}"#),
            vec![Ok(r#"{"a":1,"s":"orders.eu.1","q":7}"#.to_owned())]
        );
    }

    #[test]
    fn runtime_errors_carry_jq_text() {
        let out = run(r#"error("boom")"#, "null");
        assert_eq!(out, vec![Err("boom".to_owned())]);
        let out = run(".a.b", r#"{"a": "text"}"#);
        assert!(
            out[0].as_ref().unwrap_err().contains("cannot index"),
            "{out:?}"
        );
    }

    #[test]
    fn syntax_errors_name_the_column() {
        let e = Jq::compile(".a | {b: }").unwrap_err().to_string();
        assert!(e.starts_with("jq syntax error: expected"), "{e}");
        assert!(e.contains("column"), "{e}");
    }

    #[test]
    fn undefined_filters_and_variables_are_named() {
        let e = Jq::compile("nosuchfn(1)").unwrap_err().to_string();
        assert!(e.contains("undefined filter nosuchfn/1"), "{e}");
        let e = Jq::compile("$nope").unwrap_err().to_string();
        assert!(e.contains("undefined variable $nope"), "{e}");
    }

    #[test]
    fn non_deterministic_filters_are_left_out() {
        for code in [
            "now",
            "env",
            "$ENV",
            "localtime",
            "input",
            "halt",
            "1 | stderr",
        ] {
            let e = Jq::compile(code).unwrap_err().to_string();
            assert!(e.contains("undefined"), "{code}: {e}");
        }
        // The deterministic rest of the standard library is there.
        assert_eq!(
            run("[.[] | ascii_upcase] | sort | join(\"-\")", r#"["b","a"]"#),
            vec![Ok(r#""A-B""#.to_owned())]
        );
        assert_eq!(
            run("todate", "0"),
            vec![Ok(r#""1970-01-01T00:00:00Z""#.to_owned())]
        );
    }
}
