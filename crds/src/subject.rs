//! Sets of NATS subjects written token by token, and how they match: whether two sets share a
//! subject, and whether one lies wholly inside a filter. A stream's subjects and a consumer's
//! filters are such sets (`*` one token, `>` the rest); so is what a subject template can
//! render, where a `{{payload.field}}` may stand for several tokens anywhere in the subject.
//!
//! The routing check ([`crate::routing`]) decides with these which outputs certainly miss the
//! sink stream or certainly come back to the source.

use std::fmt;

/// One token of a [`Pattern`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Token {
    /// This token exactly.
    Literal(String),
    /// Exactly one token, any (`*`).
    One,
    /// One token or more, any: `>` at the end of a filter; in a rendered template also in the
    /// middle (a payload field whose value holds dots).
    Many,
}

/// A set of subjects, token by token.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Pattern(pub Vec<Token>);

impl Pattern {
    /// A subject or a filter as NATS writes it (`orders.*.>`): `*` is one token, `>` the
    /// rest. Other text is taken literally.
    pub fn parse(filter: &str) -> Pattern {
        Pattern(
            filter
                .split('.')
                .map(|t| match t {
                    "*" => Token::One,
                    ">" => Token::Many,
                    _ => Token::Literal(t.to_owned()),
                })
                .collect(),
        )
    }

    /// Whether some subject is in both sets.
    pub fn overlaps(&self, other: &Pattern) -> bool {
        let a = items(&self.0);
        let b = items(&other.0);
        let mut memo = vec![vec![None; b.len() + 1]; a.len() + 1];
        intersects(&a, &b, 0, 0, &mut memo)
    }

    /// Whether every subject of this set is matched by `filter`, a filter as NATS has them (a
    /// `Many` only as its last token; a filter with one elsewhere matches nothing here).
    pub fn within(&self, filter: &Pattern) -> bool {
        within(&self.0, &filter.0)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, t) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            match t {
                Token::Literal(s) => f.write_str(s)?,
                Token::One => f.write_str("*")?,
                Token::Many => f.write_str(">")?,
            }
        }
        Ok(())
    }
}

/// A token as a word over the alphabet of tokens: `Many` is one symbol then any number.
#[derive(Clone, Copy, Debug)]
enum Item<'a> {
    /// One token: this one, or any (`None`).
    Symbol(Option<&'a str>),
    /// Any number of tokens, none included.
    Star,
}

fn items(tokens: &[Token]) -> Vec<Item<'_>> {
    let mut out = Vec::with_capacity(tokens.len() + 1);
    for t in tokens {
        match t {
            Token::Literal(s) => out.push(Item::Symbol(Some(s))),
            Token::One => out.push(Item::Symbol(None)),
            Token::Many => {
                out.push(Item::Symbol(None));
                out.push(Item::Star);
            }
        }
    }
    out
}

/// Whether `a[i..]` and `b[j..]` match a common word: a star either matches nothing more or
/// takes the other side's next item.
fn intersects(
    a: &[Item],
    b: &[Item],
    i: usize,
    j: usize,
    memo: &mut Vec<Vec<Option<bool>>>,
) -> bool {
    if let Some(known) = memo[i][j] {
        return known;
    }
    let result = match (a.get(i), b.get(j)) {
        (None, None) => true,
        (Some(Item::Star), _) => {
            intersects(a, b, i + 1, j, memo) || (j < b.len() && intersects(a, b, i, j + 1, memo))
        }
        (_, Some(Item::Star)) => {
            intersects(a, b, i, j + 1, memo) || (i < a.len() && intersects(a, b, i + 1, j, memo))
        }
        (Some(Item::Symbol(x)), Some(Item::Symbol(y))) => {
            let compatible = match (x, y) {
                (Some(x), Some(y)) => x == y,
                _ => true,
            };
            compatible && intersects(a, b, i + 1, j + 1, memo)
        }
        _ => false,
    };
    memo[i][j] = Some(result);
    result
}

fn within(set: &[Token], filter: &[Token]) -> bool {
    match (set.split_first(), filter.split_first()) {
        (_, Some((Token::Many, rest))) => rest.is_empty() && !set.is_empty(),
        (None, None) => true,
        (Some((s, set_rest)), Some((f, filter_rest))) => {
            let token = match (s, f) {
                (Token::Many, _) => false,
                (_, Token::One) => true,
                (Token::Literal(a), Token::Literal(b)) => a == b,
                // `One` against a literal; a `Many` of the filter was taken above.
                _ => false,
            };
            token && within(set_rest, filter_rest)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Pattern {
        Pattern::parse(s)
    }

    /// A pattern with `Many` in the middle, as `a.{{payload.x}}.b` renders.
    fn with_many_inside() -> Pattern {
        Pattern(vec![
            Token::Literal("a".into()),
            Token::Many,
            Token::Literal("b".into()),
        ])
    }

    #[test]
    fn overlap() {
        for (a, b) in [
            ("orders.>", "orders.eu.>"),
            ("orders.>", "orders.eu"),
            ("orders.*", "orders.eu"),
            ("orders.*.x", "orders.eu.*"),
            (">", "orders"),
            ("orders.eu", "orders.eu"),
            ("*.>", "a.b.c"),
        ] {
            assert!(p(a).overlaps(&p(b)), "{a} {b}");
            assert!(p(b).overlaps(&p(a)), "{b} {a}");
        }
        for (a, b) in [
            ("orders.eu", "orders.us"),
            ("orders.>", "orders"),
            ("orders.*", "orders.eu.x"),
            ("copy.>", "orders.>"),
            ("orders.eu.>", "orders.us.>"),
        ] {
            assert!(!p(a).overlaps(&p(b)), "{a} {b}");
            assert!(!p(b).overlaps(&p(a)), "{b} {a}");
        }
        let inside = with_many_inside();
        assert!(inside.overlaps(&p("a.x.y.b")));
        assert!(inside.overlaps(&p("a.*.b")));
        assert!(inside.overlaps(&p("a.>")));
        assert!(!inside.overlaps(&p("a.b")));
        assert!(!inside.overlaps(&p("a.x.c")));
        assert!(!inside.overlaps(&p("b.>")));
    }

    #[test]
    fn containment() {
        for (set, filter) in [
            ("orders.eu", "orders.eu"),
            ("orders.eu", "orders.*"),
            ("orders.eu.x", "orders.>"),
            ("orders.*.x", "orders.>"),
            ("orders.*", "orders.*"),
            ("orders.>", "orders.>"),
            ("orders.>", ">"),
        ] {
            assert!(p(set).within(&p(filter)), "{set} within {filter}");
        }
        for (set, filter) in [
            ("orders.*", "orders.eu"),
            ("orders.>", "orders.*"),
            ("orders", "orders.>"),
            ("orders.eu.x", "orders.*"),
            ("copy.x", "orders.>"),
        ] {
            assert!(!p(set).within(&p(filter)), "{set} not within {filter}");
        }
        assert!(with_many_inside().within(&p("a.>")));
        assert!(!with_many_inside().within(&p("a.*.b")));
    }

    #[test]
    fn display_is_the_nats_form() {
        assert_eq!(p("orders.*.>").to_string(), "orders.*.>");
    }
}
