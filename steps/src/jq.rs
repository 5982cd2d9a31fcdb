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
    pub fn compile(code: &str) -> Result<Jq, String> {
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
            uses_subject: code.contains("$subject"),
            uses_headers: code.contains("$headers"),
        })
    }

    /// Runs the expression on `input`; outputs come lazily, in jq's order.
    pub fn run(&self, input: Val, globals: Globals) -> impl Iterator<Item = Result<Val, String>> {
        let ctx = Ctx::<Data>::new(&self.filter.lut, globals.into_vars());
        self.filter.id.run((ctx, input)).map(|r| {
            r.map_err(|exn| match exn.get_err() {
                // A string error (`error("x")` or jaq's own messages) reads as its text;
                // any other value as JSON.
                Ok(e) => match e.into_val() {
                    Val::TStr(s) => String::from_utf8_lossy(&s).into_owned(),
                    other => other.to_string(),
                },
                // `halt` is not compiled in, and the other exceptions do not escape a main
                // filter; should one come, it is an error of this message, not of the process.
                Err(_) => "the expression stopped without a value".to_owned(),
            })
        })
    }
}

/// Where `part` (a slice of `code`) starts, as a 1-based column, for error messages.
fn at(code: &str, part: &str) -> String {
    let offset = part.as_ptr() as usize;
    let base = code.as_ptr() as usize;
    if offset >= base && offset <= base + code.len() {
        let col = code[..offset - base].chars().count() + 1;
        format!("at column {col}")
    } else {
        "in a library definition".to_owned()
    }
}

fn near(part: &str) -> String {
    let snippet: String = part.chars().take(20).collect();
    if snippet.is_empty() {
        "at the end".to_owned()
    } else {
        format!("near {snippet:?}")
    }
}

fn load_errors(code: &str, errs: load::Errors<&str, ()>) -> String {
    let mut msgs = Vec::new();
    for (_file, err) in errs {
        match err {
            load::Error::Io(items) => {
                for (path, e) in items {
                    msgs.push(format!("cannot load module {path:?}: {e}"));
                }
            }
            load::Error::Lex(items) => {
                for (expect, found) in items {
                    msgs.push(format!(
                        "expected {} {} {}",
                        expect.as_str(),
                        at(code, found),
                        near(found)
                    ));
                }
            }
            load::Error::Parse(items) => {
                for (expect, found) in items {
                    msgs.push(format!(
                        "expected {} {} {}",
                        expect.as_str(),
                        at(code, found),
                        near(found)
                    ));
                }
            }
        }
    }
    format!("jq syntax error: {}", msgs.join("; "))
}

fn compile_errors(code: &str, errs: jaq_core::compile::Errors<&str, ()>) -> String {
    let mut msgs = Vec::new();
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
            msgs.push(format!("undefined {what} {}{hint}", at(code, name)));
        }
    }
    format!("jq error: {}", msgs.join("; "))
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
        let e = Jq::compile(".a | {b: }").unwrap_err();
        assert!(e.starts_with("jq syntax error: expected"), "{e}");
        assert!(e.contains("column"), "{e}");
    }

    #[test]
    fn undefined_filters_and_variables_are_named() {
        let e = Jq::compile("nosuchfn(1)").unwrap_err();
        assert!(e.contains("undefined filter nosuchfn/1"), "{e}");
        let e = Jq::compile("$nope").unwrap_err();
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
            let e = Jq::compile(code).unwrap_err();
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
