//! A shortcut for the simplest jq expressions: field access (`.a.b`), object construction
//! (`{id: .order_id, c: .customer.name}`), literals, the variables, arithmetic and comparisons,
//! and pipes between them. Such an expression has exactly one output, and building it directly
//! costs a fraction of running jaq's general machinery.
//!
//! The shortcut only ever takes the path where jq's semantics are plain: whenever a step meets
//! anything else (an index into a value that is neither an object nor null, an arithmetic
//! error), it gives up and the expression runs in jaq from the start, so that outputs and errors
//! are jaq's. Arithmetic and comparisons are jaq's own operations on jaq's values.

use jaq_core::load::parse::{BinaryOp, Term};
use jaq_core::load::{self, lex::StrPart};
use jaq_core::ops::{Cmp, Math};
use jaq_core::path::{Opt, Part};
use jaq_json::{Map, Val};

use crate::jq::Globals;

/// An expression of the simple kind, ready to evaluate.
#[derive(Debug)]
pub(crate) enum Simple {
    /// `.`
    Id,
    /// A literal value.
    Lit(Val),
    /// `$subject`, `$headers` or `$seq`.
    Var(Var),
    /// `e.key1.key2…`
    Fields(Box<Simple>, Vec<Val>),
    /// `{k1: e1, k2: e2, …}`
    Obj(Vec<(Val, Simple)>),
    /// `l op r`
    Math(Box<Simple>, Math, Box<Simple>),
    /// `l op r`
    Cmp(Box<Simple>, Cmp, Box<Simple>),
    /// `l | r`
    Pipe(Box<Simple>, Box<Simple>),
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum Var {
    Subject,
    Headers,
    Seq,
}

impl Simple {
    /// The simple form of `code`, if it has one.
    pub(crate) fn of(code: &str) -> Option<Simple> {
        let term = load::parse(code, |p| p.term())?;
        convert(&term)
    }

    /// The one output, or `None` where jaq must decide.
    pub(crate) fn eval(&self, input: &Val, globals: &Globals) -> Option<Val> {
        Some(match self {
            Self::Id => input.clone(),
            Self::Lit(v) => v.clone(),
            Self::Var(Var::Subject) => globals.subject.clone(),
            Self::Var(Var::Headers) => globals.headers.clone(),
            Self::Var(Var::Seq) => globals.seq.clone(),
            Self::Fields(base, keys) => {
                let base = base.eval(input, globals)?;
                let mut value = &base;
                for key in keys {
                    value = match value {
                        Val::Obj(map) => map.get(key).unwrap_or(&Val::Null),
                        Val::Null => &Val::Null,
                        _ => return None,
                    };
                }
                value.clone()
            }
            Self::Obj(entries) => {
                let mut map = Map::with_capacity_and_hasher(entries.len(), Default::default());
                for (key, value) in entries {
                    map.insert(key.clone(), value.eval(input, globals)?);
                }
                Val::obj(map)
            }
            Self::Math(l, op, r) => {
                let (l, r) = (l.eval(input, globals)?, r.eval(input, globals)?);
                op.run(l, r).ok()?
            }
            Self::Cmp(l, op, r) => {
                let (l, r) = (l.eval(input, globals)?, r.eval(input, globals)?);
                Val::Bool(op.run(&l, &r))
            }
            Self::Pipe(l, r) => r.eval(&l.eval(input, globals)?, globals)?,
        })
    }
}

fn convert(term: &Term<&str>) -> Option<Simple> {
    Some(match term {
        Term::Id => Simple::Id,
        Term::Num(n) => Simple::Lit(Val::from(n.parse::<isize>().ok()?)),
        Term::Str(None, _) => Simple::Lit(Val::from(plain_str(term)?.to_owned())),
        Term::Var(name) => Simple::Var(match *name {
            "$subject" => Var::Subject,
            "$headers" => Var::Headers,
            "$seq" => Var::Seq,
            _ => return None,
        }),
        Term::Path(base, path) => {
            let keys = path
                .0
                .iter()
                .map(|(part, opt)| match (part, opt) {
                    (Part::Index(key), Opt::Essential) => {
                        Some(Val::from(plain_str(key)?.to_owned()))
                    }
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()?;
            Simple::Fields(Box::new(convert(base)?), keys)
        }
        Term::Obj(entries) => Simple::Obj(
            entries
                .iter()
                .map(|(key, value)| {
                    let name = plain_str(key)?;
                    let value = match value {
                        Some(value) => convert(value)?,
                        // `{a}` is `{a: .a}`.
                        None => {
                            Simple::Fields(Box::new(Simple::Id), vec![Val::from(name.to_owned())])
                        }
                    };
                    Some((Val::from(name.to_owned()), value))
                })
                .collect::<Option<_>>()?,
        ),
        Term::BinOp(l, op, r) => {
            let (l, r) = (Box::new(convert(l)?), Box::new(convert(r)?));
            match op {
                BinaryOp::Math(op) => Simple::Math(l, *op, r),
                BinaryOp::Cmp(op) => Simple::Cmp(l, *op, r),
                BinaryOp::Pipe(None) => Simple::Pipe(l, r),
                _ => return None,
            }
        }
        _ => return None,
    })
}

/// The text of a string literal without escapes or interpolation.
fn plain_str<'a>(term: &Term<&'a str>) -> Option<&'a str> {
    match term {
        Term::Str(None, parts) => match &parts[..] {
            [StrPart::Str(s)] => Some(s),
            [] => Some(""),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jq::Jq;
    use jaq_json::Num;

    fn globals() -> Globals {
        Globals {
            subject: Val::from("orders.eu.1".to_owned()),
            headers: Val::obj(
                [(Val::from("A".to_owned()), Val::from("1".to_owned()))]
                    .into_iter()
                    .collect(),
            ),
            seq: Val::Num(Num::Int(7)),
        }
    }

    /// Where the shortcut gives an output, it is jaq's only output, value for value.
    #[test]
    fn simple_expressions_give_what_jaq_gives() {
        let inputs = [
            r#"{"order_id":"o-1","qty":3,"price":12.5,"customer":{"name":"Ada","region":"eu"},"items":[1,2],"n":null,"s":"x"}"#,
            r#"{"order_id":7,"qty":"3","price":null,"customer":null}"#,
            r#"{"qty":9223372036854775807,"price":2,"customer":{"name":{"first":"A"}}}"#,
            r#"{"a":1,"a":2}"#,
            "null",
            "[1,2]",
            r#""text""#,
            "12.50",
        ];
        let codes = [
            ".",
            ".order_id",
            ".customer.name",
            ".customer.name.first",
            ".missing.deeper",
            ".\"order_id\"",
            r#"{id: .order_id, total: (.qty * .price), customer: .customer.name}"#,
            "{order_id, qty}",
            r#"{"quoted": .qty, a: 1, a: 2, b: "lit"}"#,
            ".qty > 3",
            ".qty == 3",
            ".price <= 12",
            ".qty + 1",
            ".qty - .price",
            ".qty / 2",
            ".qty % 2",
            ".s + \"y\"",
            "{s: $subject, h: $headers, q: $seq}",
            ".customer | .name",
            "{}",
            "1",
            "\"a\"",
            "\"\"",
            "$seq * 2",
            ".items.x",
            ".qty * .customer",
        ];
        let mut shortcuts = 0;
        for code in codes {
            let jq = Jq::compile(code).unwrap();
            let simple = Simple::of(code).unwrap_or_else(|| panic!("{code} is simple"));
            for input in inputs {
                let value = jaq_json::read::parse_single(input.as_bytes()).unwrap();
                let jaq: Vec<_> = jq
                    .run_jaq(value.clone(), globals())
                    .map(|r| format!("{r:?}"))
                    .collect();
                if let Some(out) = simple.eval(&value, &globals()) {
                    shortcuts += 1;
                    assert_eq!(
                        jaq,
                        [format!("{:?}", Ok::<_, String>(out))],
                        "{code} on {input}"
                    );
                }
            }
        }
        assert!(shortcuts > 100, "{shortcuts}");
    }

    #[test]
    fn other_expressions_are_left_to_jaq() {
        for code in [
            ".a?",
            ".[0]",
            ".[]",
            ".a, .b",
            ".a // 1",
            ". as $x | $x",
            "$__loc__",
            "true",
            "null",
            "1.5",
            "\"a\\nb\"",
            "\"\\(.a)\"",
            "-.a",
            "{(.k): 1}",
            "{$seq}",
            "[.a]",
            ".a and .b",
            "def f: .; f",
            "length",
            "if . then 1 else 2 end",
        ] {
            assert!(Simple::of(code).is_none(), "{code}");
        }
    }
}
