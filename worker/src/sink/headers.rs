//! What every output carries: a deterministic `Nats-Msg-Id` and headers naming its source.
//!
//! The message id is `<namespace>/<pipeline>:<split hash>:<source sequence>:<output index>`:
//! the same source message yields the same ids however often it is replayed, so the sink
//! stream's duplicate window drops a replay. The split hash is the FNV-1a hash of the split's
//! name that also names its consumer. Once a split has found its source stream deleted and
//! created again (sequences counted anew), its ids carry the stream's creation time too,
//! `<namespace>/<pipeline>:<split hash>@<creation time, Unix ns>:<source sequence>:<index>`,
//! so that they never collide with the earlier stream's ids.

use std::fmt::Write;

use async_nats::header::NATS_MESSAGE_ID;
use async_nats::{HeaderMap, HeaderName, HeaderValue};

/// `Jetflow-Source-Stream`: the stream an output was read from.
pub fn source_stream() -> HeaderName {
    HeaderName::from_static("Jetflow-Source-Stream")
}

/// `Jetflow-Source-Subject`: the subject of the source message.
pub fn source_subject() -> HeaderName {
    HeaderName::from_static("Jetflow-Source-Subject")
}

/// `Jetflow-Source-Sequence`: the stream sequence of the source message.
pub fn source_sequence() -> HeaderName {
    HeaderName::from_static("Jetflow-Source-Sequence")
}

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

/// The headers that name an output's source: set here for this pipeline's source, never
/// carried over from an earlier pipeline's output.
const SOURCE: [&str; 3] = [
    "Jetflow-Source-Stream",
    "Jetflow-Source-Subject",
    "Jetflow-Source-Sequence",
];

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
        let _ = write!(id, "{seq}:{index}");
        id
    }

    /// The id of the dead letter of the source message at `seq`.
    pub fn dead_letter_id(&self, seq: u64) -> String {
        let mut id = String::with_capacity(self.prefix.len() + 24);
        id.push_str(&self.prefix);
        let _ = write!(id, "{seq}:dlq");
        id
    }
}

/// The headers of an output: the headers it already has (from the source or the steps, less
/// the stream instructions), the message id and the source headers.
pub fn output_headers(
    carried: Option<&HeaderMap>,
    id: String,
    stream: &str,
    subject: &str,
    seq: u64,
) -> HeaderMap {
    let mut headers = match carried {
        Some(h) if !h.is_empty() => {
            let mut out = HeaderMap::new();
            for (name, values) in h.iter() {
                if NOT_FORWARDED
                    .iter()
                    .chain(&SOURCE)
                    .any(|n| n.eq_ignore_ascii_case(name.as_ref()))
                {
                    continue;
                }
                for value in values {
                    out.append(name.clone(), value.clone());
                }
            }
            out
        }
        _ => HeaderMap::new(),
    };
    headers.insert(NATS_MESSAGE_ID, id);
    // A NATS Core source has no stream: the header is left out rather than empty.
    if !stream.is_empty() {
        headers.insert(source_stream(), stream);
    }
    headers.insert(source_subject(), subject);
    headers.insert(source_sequence(), HeaderValue::from(seq));
    headers
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

    #[test]
    fn stream_instructions_are_not_forwarded() {
        let mut carried = HeaderMap::new();
        carried.insert("Nats-Msg-Id", "original");
        carried.insert("Nats-Expected-Last-Sequence", "3");
        carried.insert("Trace", "abc");
        let h = output_headers(Some(&carried), "id-1".into(), "orders", "orders.eu", 9);
        assert_eq!(h.get(NATS_MESSAGE_ID).unwrap().as_str(), "id-1");
        assert!(h.get("Nats-Expected-Last-Sequence").is_none());
        assert_eq!(h.get("Trace").unwrap().as_str(), "abc");
        assert_eq!(h.get(source_sequence()).unwrap().as_str(), "9");
        assert_eq!(h.get(source_subject()).unwrap().as_str(), "orders.eu");
    }

    #[test]
    fn source_headers_name_this_pipelines_source_only() {
        // The output of an earlier pipeline, read from NATS Core (no stream).
        let mut carried = HeaderMap::new();
        carried.insert("Jetflow-Source-Stream", "upstream");
        carried.insert("Jetflow-Source-Sequence", "77");
        let h = output_headers(Some(&carried), "id-1".into(), "", "sensors.a", 5);
        assert!(h.get(source_stream()).is_none());
        assert_eq!(h.get(source_sequence()).unwrap().as_str(), "5");
        assert_eq!(h.get_all(source_sequence()).count(), 1);
        let h = output_headers(Some(&carried), "id-1".into(), "orders", "orders.eu", 5);
        assert_eq!(h.get(source_stream()).unwrap().as_str(), "orders");
    }
}
