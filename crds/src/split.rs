//! Splits: the units a source is read in, and the durable consumer that backs each JetStream
//! split. Names are derived deterministically so that the operator (which creates consumers)
//! and the worker (which reads through them) agree without talking.

use crate::pipeline::{PipelineSpec, SplitBy};

/// One split of a pipeline's source.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Split {
    /// The split's name: its subject filter (`>` for a whole stream).
    pub name: String,
    /// The subject filter the split reads.
    pub subject: String,
}

/// The splits known from the spec alone. With `splitBy: Subject` the splits are the subjects
/// found in the stream; this returns the filters, which the caller expands.
pub fn static_splits(spec: &PipelineSpec) -> Vec<Split> {
    let subjects: Vec<String> = if let Some(core) = &spec.source.core {
        core.subjects.clone()
    } else if let Some(js) = &spec.source.jetstream {
        if js.filter_subjects.is_empty() {
            vec![">".to_owned()]
        } else {
            js.filter_subjects.clone()
        }
    } else {
        Vec::new()
    };
    let mut splits: Vec<Split> = subjects
        .into_iter()
        .map(|s| Split {
            name: s.clone(),
            subject: s,
        })
        .collect();
    splits.sort();
    splits.dedup();
    splits
}

/// Whether the source's splits follow the subjects present in the stream.
pub fn is_dynamic(spec: &PipelineSpec) -> bool {
    spec.source
        .jetstream
        .as_ref()
        .is_some_and(|js| js.split_by == SplitBy::Subject)
}

/// The durable consumer name of a split: `jetflow_<namespace>_<pipeline>_<hash>`, where the
/// hash is taken over the split's subject filter. Valid as a JetStream name.
pub fn consumer_name(namespace: &str, pipeline: &str, split: &str) -> String {
    let clean = |s: &str| s.replace(['.', '*', '>', '/', '\\', ' '], "_");
    format!(
        "jetflow_{}_{}_{:016x}",
        clean(namespace),
        clean(pipeline),
        fnv1a(split.as_bytes())
    )
}

/// 64-bit FNV-1a: stable across releases and platforms, unlike `std`'s hasher.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_names_are_stable_and_valid() {
        let a = consumer_name("default", "orders.enrich", "orders.*");
        assert_eq!(a, consumer_name("default", "orders.enrich", "orders.*"));
        assert_ne!(a, consumer_name("default", "orders.enrich", "orders.>"));
        assert!(!a.contains(['.', '*', '>', ' ']));
        assert!(a.starts_with("jetflow_default_orders_enrich_"));
    }
}
