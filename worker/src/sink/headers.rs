//! What every output carries: a deterministic `Nats-Msg-Id` and `Jetflow-Source`, the header
//! naming its source message (`<stream>/<sequence>/<subject>`, see
//! [`jetflow_nats::source_header`]).
//!
//! The message id is `<namespace>/<pipeline>:<split hash>:<source sequence>:<output index>`:
//! the same source message yields the same ids however often it is replayed, so the sink
//! stream's duplicate window drops a replay. The split hash is the FNV-1a hash of the split's
//! name that also names its consumer. Once a split has found its source stream deleted and
//! created again (sequences counted anew), its ids carry the stream's creation time too,
//! `<namespace>/<pipeline>:<split hash>@<creation time, Unix ns>:<source sequence>:<index>`,
//! so that they never collide with the earlier stream's ids.

use async_nats::header::NATS_MESSAGE_ID;
use async_nats::{HeaderMap, HeaderValue};
use jetflow_nats::source_header::{self, Prefix};

/// Header names a source message may carry that must not reach the sink: they are
/// instructions to the stream that stored the source message (expectations, its message id),
/// and would make the sink refuse the output or deduplicate it wrongly.
const NOT_FORWARDED: [&str; 6] = [
    "Nats-Msg-Id",
    "Nats-Expected-Stream",
    "Nats-Expected-Last-Msg-Id",
    "Nats-Expected-Last-Sequence",
    "Nats-Expected-Last-Subject-Sequence",
    "Nats-Expected-Last-Subject-Sequence-Subject",
];

/// Headers whose name begins with this name an output's source: set here for this pipeline's
/// source, never carried over from an earlier pipeline's output (`Jetflow-Source`, and the
/// `Jetflow-Source-*` headers of earlier jetflow versions).
const SOURCE: &str = "Jetflow-Source";

/// Whether a carried header reaches the sink. Most names start with neither `Nats-` nor
/// `Jetflow-Source`, and are let through after comparing a few bytes.
fn forwarded(name: &str) -> bool {
    fn starts_with(name: &str, prefix: &str) -> bool {
        name.len() >= prefix.len()
            && name.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
    }
    if starts_with(name, "Nats-") {
        !NOT_FORWARDED.iter().any(|n| n.eq_ignore_ascii_case(name))
    } else {
        // A replayed dead letter's target is the input's, not the output's: an output carrying
        // it on would be skipped by every pipeline reading the sink stream but that one.
        !starts_with(name, SOURCE) && !name.eq_ignore_ascii_case(jetflow_nats::replay::REPLAY_FOR)
    }
}

/// Builds the message ids of one split.
#[derive(Clone, Debug)]
pub struct MessageIds {
    base: String,
    prefix: String,
}

impl MessageIds {
    /// The ids of `split` of pipeline `namespace/pipeline`.
    pub fn new(namespace: &str, pipeline: &str, split: &str) -> Self {
        let base = format!(
            "{namespace}/{pipeline}:{:016x}",
            jetflow_crds::split::fnv1a(split.as_bytes())
        );
        Self {
            prefix: format!("{base}:"),
            base,
        }
    }

    /// The ids of the same split on a recreated source stream created at `created`.
    pub fn on_stream(&self, created: jiff::Timestamp) -> Self {
        Self {
            prefix: format!("{}@{}:", self.base, created.as_nanosecond()),
            base: self.base.clone(),
        }
    }

    /// The id of output `index` of the source message at `seq`.
    pub fn id(&self, seq: u64, index: usize) -> String {
        let mut id = String::with_capacity(self.prefix.len() + 24);
        id.push_str(&self.prefix);
        let mut digits = itoa::Buffer::new();
        id.push_str(digits.format(seq));
        id.push(':');
        id.push_str(digits.format(index));
        id
    }

    /// The id of the dead letter of the source message at `seq`.
    pub fn dead_letter_id(&self, seq: u64) -> String {
        let mut id = String::with_capacity(self.prefix.len() + 24);
        id.push_str(&self.prefix);
        id.push_str(itoa::Buffer::new().format(seq));
        id.push_str(":dlq");
        id
    }
}

/// The headers of an output: the headers it already has (from the source or the steps, less
/// the stream instructions and source headers), the message id and `Jetflow-Source`.
///
/// The work per output is the least async-nats' `HeaderMap` allows: one map (no second map,
/// no regrowth for an output without carried headers), the header names constant, and two
/// strings, the id and the source value, each built in one allocation from the split's prefix.
pub fn output_headers(
    carried: Option<&HeaderMap>,
    id: String,
    source: &Prefix,
    subject: &str,
    seq: u64,
) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(carried) = carried {
        for (name, values) in carried.iter() {
            if !forwarded(name.as_ref()) {
                continue;
            }
            // Names are unique in the carried map: the first value inserts (one lookup).
            let mut values = values.iter();
            if let Some(first) = values.next() {
                headers.insert(name.clone(), first.clone());
            }
            for value in values {
                headers.append(name.clone(), value.clone());
            }
        }
    }
    headers.insert(NATS_MESSAGE_ID, HeaderValue::from(id));
    headers.insert(
        source_header::name(),
        HeaderValue::from(source.value(seq, subject)),
    );
    headers
}

/// The bytes `headers` take on the wire (`NATS/1.0`, a line per value, the blank line), as the
/// server counts them against `max_payload`.
pub fn wire_len(headers: &HeaderMap) -> usize {
    let mut len = b"NATS/1.0\r\n".len() + b"\r\n".len();
    for (name, values) in headers.iter() {
        let name: &str = name.as_ref();
        for value in values {
            len += name.len() + b": ".len() + value.as_str().len() + b"\r\n".len();
        }
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_deterministic_per_split_sequence_and_index() {
        let ids = MessageIds::new("default", "copy", "orders.>");
        assert_eq!(ids.id(7, 0), ids.id(7, 0));
        assert_ne!(ids.id(7, 0), ids.id(7, 1));
        assert_ne!(
            ids.id(7, 0),
            MessageIds::new("default", "copy", "orders.eu.>").id(7, 0)
        );
        assert!(ids.id(42, 3).starts_with("default/copy:"));
        assert!(ids.id(42, 3).ends_with(":42:3"));
        let created = jiff::Timestamp::from_second(1_700_000_000).unwrap();
        let recreated = ids.on_stream(created);
        assert_ne!(recreated.id(7, 0), ids.id(7, 0));
        assert_ne!(recreated.dead_letter_id(7), ids.dead_letter_id(7));
        assert_eq!(
            recreated.id(7, 0),
            format!(
                "default/copy:{:016x}@1700000000000000000:7:0",
                jetflow_crds::split::fnv1a(b"orders.>")
            )
        );
        assert_eq!(recreated.on_stream(created).id(7, 0), recreated.id(7, 0));
    }

    fn source(h: &HeaderMap) -> source_header::Source<'_> {
        source_header::Source::of(h).unwrap()
    }

    #[test]
    fn stream_instructions_are_not_forwarded() {
        let mut carried = HeaderMap::new();
        carried.insert("Nats-Msg-Id", "original");
        carried.insert("Nats-Expected-Last-Sequence", "3");
        carried.insert("nats-expected-stream", "in");
        carried.insert("Nats-Trace-Dest", "traces");
        carried.insert("Trace", "abc");
        carried.append("Multi", "1");
        carried.append("Multi", "2");
        let orders = Prefix::new("orders");
        let h = output_headers(Some(&carried), "id-1".into(), &orders, "orders.eu", 9);
        assert_eq!(h.get(NATS_MESSAGE_ID).unwrap().as_str(), "id-1");
        assert_eq!(h.get_all(NATS_MESSAGE_ID).count(), 1);
        assert!(h.get("Nats-Expected-Last-Sequence").is_none());
        assert!(h.get("nats-expected-stream").is_none());
        assert_eq!(h.get("Nats-Trace-Dest").unwrap().as_str(), "traces");
        assert_eq!(h.get("Trace").unwrap().as_str(), "abc");
        let multi: Vec<_> = h.get_all("Multi").map(|v| v.as_str()).collect();
        assert_eq!(multi, ["1", "2"]);
        assert_eq!(
            source(&h),
            source_header::Source {
                stream: Some("orders"),
                sequence: 9,
                subject: "orders.eu"
            }
        );
        assert_eq!(h.len(), 5);
    }

    #[test]
    fn source_headers_name_this_pipelines_source_only() {
        // The output of an earlier pipeline (and of an earlier jetflow version's), read from
        // NATS Core (no stream).
        let mut carried = HeaderMap::new();
        carried.insert("Jetflow-Source", "upstream/77/raw.a");
        carried.insert("Jetflow-Source-Stream", "upstream");
        carried.insert("Jetflow-Source-Sequence", "77");
        carried.insert("jetflow-source-subject", "raw.a");
        // A replayed dead letter's target pipeline is its input's alone.
        carried.insert("Jetflow-Replay-For", "shop/upstream");
        let h = output_headers(
            Some(&carried),
            "id-1".into(),
            &Prefix::new(""),
            "sensors.a",
            5,
        );
        assert_eq!(h.get("Jetflow-Source").unwrap().as_str(), "/5/sensors.a");
        assert_eq!(h.get_all("Jetflow-Source").count(), 1);
        assert_eq!(source(&h).stream, None);
        assert_eq!(source(&h).sequence, 5);
        assert_eq!(h.len(), 2, "only the id and this pipeline's source: {h:?}");
        assert!(h.get("Jetflow-Replay-For").is_none());
        let h = output_headers(
            Some(&carried),
            "id-1".into(),
            &Prefix::new("orders"),
            "orders.eu",
            5,
        );
        assert_eq!(source(&h).stream, Some("orders"));
        assert_eq!(source(&h).subject, "orders.eu");
    }

    #[test]
    fn one_source_header_is_58_bytes_shorter_than_three() {
        let ids = MessageIds::new("default", "copy", "orders.>");
        let id = ids.id(1_234_567, 0);
        let h = output_headers(
            None,
            id.clone(),
            &Prefix::new("orders"),
            "orders.eu",
            1_234_567,
        );
        // The block of the three headers that named the source before, for comparison.
        let mut three = HeaderMap::new();
        three.insert(NATS_MESSAGE_ID, id.as_str());
        three.insert("Jetflow-Source-Stream", "orders");
        three.insert("Jetflow-Source-Subject", "orders.eu");
        three.insert("Jetflow-Source-Sequence", "1234567");
        let (before, after) = (wire_len(&three), wire_len(&h));
        println!("header bytes per output: {before} with three source headers, {after} with one");
        assert_eq!(
            h.get("Jetflow-Source").unwrap().as_str(),
            "orders/1234567/orders.eu"
        );
        // `Jetflow-Source: orders/1234567/orders.eu\r\n` (42 bytes) against 100 bytes.
        assert_eq!(before - after, 58);
    }
}
