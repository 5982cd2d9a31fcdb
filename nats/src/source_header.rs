//! The `Jetflow-Source` header: which source message an output (or a dead letter) came from.
//!
//! Its value is `<stream>/<sequence>/<subject>`, for example `orders/1234/orders.eu`: the
//! source stream, the stream sequence of the source message and its subject. A NATS Core
//! source has no stream, so the stream part is empty: `/1764581234000000001/sensors.a`. The
//! value parses unambiguously: a stream name never contains `/` (nor `.`, `*`, `>` or
//! whitespace), the sequence is decimal digits, and the subject, which may contain `.` and `/`,
//! is everything after the second `/`.
//!
//! The worker writes the value with [`Prefix`] (the `<stream>/` part is built once per
//! pipeline); everyone who reads outputs or dead letters (the worker's dead letters, `kubectl
//! jetflow dlq`, the tests) parses it with [`Source::parse`] or [`Source::of`].

use std::fmt;

use async_nats::{HeaderMap, HeaderName};

/// The header's name.
pub const NAME: &str = "Jetflow-Source";

/// The header's name as a [`HeaderName`], built at compile time (no work per message).
pub fn name() -> HeaderName {
    const { HeaderName::from_static(NAME) }
}

/// Where an output came from, as the `Jetflow-Source` header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Source<'a> {
    /// The source stream; `None` for a NATS Core source.
    pub stream: Option<&'a str>,
    /// The stream sequence of the source message (for a NATS Core source, the split's count).
    pub sequence: u64,
    /// The subject of the source message.
    pub subject: &'a str,
}

/// A `Jetflow-Source` header that is missing or not `<stream>/<sequence>/<subject>`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    /// The message has no `Jetflow-Source` header.
    #[error("no Jetflow-Source header")]
    Missing,
    /// The value is not `<stream>/<sequence>/<subject>`.
    #[error("Jetflow-Source header {value:?} is not <stream>/<sequence>/<subject>")]
    Malformed {
        /// The value as found.
        value: String,
    },
}

impl<'a> Source<'a> {
    /// Parses a header value `<stream>/<sequence>/<subject>` (empty stream: NATS Core).
    pub fn parse(value: &'a str) -> Result<Self, ParseError> {
        let malformed = || ParseError::Malformed {
            value: value.to_owned(),
        };
        let (stream, rest) = value.split_once('/').ok_or_else(malformed)?;
        let (sequence, subject) = rest.split_once('/').ok_or_else(malformed)?;
        if sequence.is_empty()
            || !sequence.bytes().all(|b| b.is_ascii_digit())
            || subject.is_empty()
        {
            return Err(malformed());
        }
        Ok(Self {
            stream: (!stream.is_empty()).then_some(stream),
            sequence: sequence.parse().map_err(|_| malformed())?,
            subject,
        })
    }

    /// The source named by the `Jetflow-Source` header of `headers`.
    pub fn of(headers: &'a HeaderMap) -> Result<Self, ParseError> {
        Self::parse(headers.get(NAME).ok_or(ParseError::Missing)?.as_str())
    }
}

impl fmt::Display for Source<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}",
            self.stream.unwrap_or(""),
            self.sequence,
            self.subject
        )
    }
}

/// The part of the header value every output of a pipeline shares, `<stream>/`, built once:
/// each output adds only its sequence and subject.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prefix(String);

impl Prefix {
    /// The prefix for `stream`; an empty name stands for a NATS Core source.
    pub fn new(stream: &str) -> Self {
        Self(format!("{stream}/"))
    }

    /// The header value of the source message at `sequence` on `subject`, in one allocation.
    pub fn value(&self, sequence: u64, subject: &str) -> String {
        // 20 digits hold any u64.
        let mut value = String::with_capacity(self.0.len() + 21 + subject.len());
        value.push_str(&self.0);
        value.push_str(itoa::Buffer::new().format(sequence));
        value.push('/');
        value.push_str(subject);
        value
    }

    /// The source stream (empty for NATS Core).
    pub fn stream(&self) -> &str {
        &self.0[..self.0.len() - 1]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_with_dotted_subjects_and_without_a_stream() {
        let cases = [
            (Some("orders"), 1234, "orders.eu.paris"),
            (Some("ORDERS_v2-x"), u64::MAX, "a"),
            (None, 1_764_581_234_000_000_001, "sensors.a.temperature"),
            // Subjects may hold `/` too: it is the last part, so it stays whole.
            (Some("s"), 0, "odd/subject.with/slashes"),
        ];
        for (stream, sequence, subject) in cases {
            let prefix = Prefix::new(stream.unwrap_or(""));
            assert_eq!(prefix.stream(), stream.unwrap_or(""));
            let value = prefix.value(sequence, subject);
            let source = Source {
                stream,
                sequence,
                subject,
            };
            assert_eq!(value, source.to_string());
            assert_eq!(Source::parse(&value), Ok(source), "{value}");
        }
        assert_eq!(
            Prefix::new("orders").value(1234, "orders.eu"),
            "orders/1234/orders.eu"
        );
        assert_eq!(Prefix::new("").value(7, "sensors.a"), "/7/sensors.a");
    }

    #[test]
    fn malformed_values_are_refused_and_a_missing_header_is_named() {
        for value in [
            "",
            "orders",
            "orders/12",
            "orders/12/",
            "orders//orders.eu",
            "orders/x1/orders.eu",
            "orders/+1/orders.eu",
            "orders/99999999999999999999/a",
        ] {
            assert_eq!(
                Source::parse(value),
                Err(ParseError::Malformed {
                    value: value.to_owned()
                }),
                "{value:?}"
            );
        }
        assert_eq!(Source::of(&HeaderMap::new()), Err(ParseError::Missing));
        let mut headers = HeaderMap::new();
        headers.insert(name(), "orders/3/orders.eu");
        assert_eq!(Source::of(&headers).unwrap().sequence, 3);
        assert_eq!(name().to_string(), NAME);
    }
}
