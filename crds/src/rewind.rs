//! Rewinding a running pipeline: the value of the `jetflow.io/rewind` annotation, which the
//! operator acts on once per value, and `kubectl jetflow rewind` writes.
//!
//! The value is the target and, after a `;`, anything that makes it new (the plugin writes the
//! time it asked): `sequence=120`, `time=2026-01-05T10:00:00Z;at=1767607200`, `start`.
//!
//! The checkpoint's epoch (the value the operator records in `jetflow.io/reset-applied`) holds
//! both the last reset and the last rewind applied, so that a worker that started before either
//! can never write its old positions back: `<reset>` alone as before, or `<reset>|rewind=<value>`.

use std::fmt;

/// Where a rewind moves every split to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Read from this stream sequence on (each split from its first message at or after it).
    Sequence(u64),
    /// Read from the first message stored at or after this time.
    Time(jiff::Timestamp),
    /// Read from where `spec.source.jetstream.start` says, as a split without a checkpoint.
    Start,
}

/// Why an annotation value is not a rewind.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "{} {value:?} is not a rewind: expected sequence=N (N >= 1), time=<RFC 3339> or start, optionally followed by ;<anything>",
    crate::names::REWIND_ANNOTATION
)]
pub struct ParseError {
    /// The value.
    pub value: String,
}

impl Target {
    /// Parses an annotation value (the part before the first `;`).
    pub fn parse(value: &str) -> Result<Self, ParseError> {
        let bad = || ParseError {
            value: value.to_owned(),
        };
        let target = value.split(';').next().unwrap_or_default().trim();
        if target == "start" {
            return Ok(Self::Start);
        }
        let (kind, arg) = target.split_once('=').ok_or_else(bad)?;
        match kind.trim() {
            "sequence" => match arg.trim().parse::<u64>() {
                Ok(n) if n >= 1 => Ok(Self::Sequence(n)),
                _ => Err(bad()),
            },
            "time" => arg.trim().parse().map(Self::Time).map_err(|_| bad()),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sequence(n) => write!(f, "sequence={n}"),
            Self::Time(t) => write!(f, "time={t}"),
            Self::Start => f.write_str("start"),
        }
    }
}

const EPOCH_REWIND: &str = "|rewind=";

/// The reset and rewind values a checkpoint epoch records.
pub fn split_epoch(epoch: Option<&str>) -> (Option<&str>, Option<&str>) {
    match epoch {
        None => (None, None),
        Some(e) => match e.split_once(EPOCH_REWIND) {
            Some((reset, rewind)) => ((!reset.is_empty()).then_some(reset), Some(rewind)),
            None => (Some(e), None),
        },
    }
}

/// The epoch recording `reset` and `rewind`.
pub fn join_epoch(reset: Option<&str>, rewind: Option<&str>) -> Option<String> {
    match (reset, rewind) {
        (None, None) => None,
        (Some(r), None) => Some(r.to_owned()),
        (reset, Some(w)) => Some(format!("{}{EPOCH_REWIND}{w}", reset.unwrap_or_default())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_with_or_without_a_nonce() {
        assert_eq!(Target::parse("sequence=120"), Ok(Target::Sequence(120)));
        assert_eq!(
            Target::parse("sequence=120;at=5"),
            Ok(Target::Sequence(120))
        );
        assert_eq!(Target::parse("start;2"), Ok(Target::Start));
        assert_eq!(
            Target::parse("time=2026-01-05T10:00:00Z;x"),
            Ok(Target::Time("2026-01-05T10:00:00Z".parse().unwrap()))
        );
        for bad in [
            "",
            "sequence=0",
            "sequence=x",
            "time=yesterday",
            "end",
            "seq=3",
        ] {
            let e = Target::parse(bad).unwrap_err();
            assert!(e.to_string().contains("jetflow.io/rewind"), "{e}");
        }
        let t = Target::Time("2026-01-05T10:00:00Z".parse().unwrap());
        assert_eq!(Target::parse(&t.to_string()), Ok(t));
    }

    #[test]
    fn an_epoch_keeps_the_reset_and_the_rewind_apart() {
        assert_eq!(split_epoch(None), (None, None));
        assert_eq!(split_epoch(Some("r1")), (Some("r1"), None));
        let e = join_epoch(Some("r1"), Some("sequence=3;a")).unwrap();
        assert_eq!(split_epoch(Some(&e)), (Some("r1"), Some("sequence=3;a")));
        let e = join_epoch(None, Some("start")).unwrap();
        assert_eq!(split_epoch(Some(&e)), (None, Some("start")));
        assert_eq!(join_epoch(Some("r1"), None).as_deref(), Some("r1"));
        assert_eq!(join_epoch(None, None), None);
    }
}
