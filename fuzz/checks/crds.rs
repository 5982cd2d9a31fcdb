//! The properties the fuzz targets check on the checkpoint and assignment formats, shared
//! with the regression tests (`crds/tests/fuzz_regressions.rs` includes this file): arbitrary
//! bytes parse or give an error, never panic; whatever parses serializes (as the file and as
//! the ConfigMap hold it) and parses back equal; merging a parsed checkpoint into another
//! never panics and never moves a position backwards.

use std::collections::BTreeMap;

use jetflow_crds::assignment::Assignment;
use jetflow_crds::checkpoint::Checkpoint;

/// A value parsed from `data`, written compact (as the ConfigMap holds it) and pretty (as the
/// file does), reads back equal both ways.
fn round_trip<T>(data: &[u8]) -> Option<T>
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let value: T = serde_json::from_slice(data).ok()?;
    let compact = serde_json::to_string(&value).expect("serializes");
    let back: T = serde_json::from_str(&compact).unwrap_or_else(|e| panic!("{compact}: {e}"));
    assert_eq!(back, value, "{compact}");
    let pretty = serde_json::to_vec_pretty(&value).expect("serializes");
    let back: T = serde_json::from_slice(&pretty).expect("reads back");
    assert_eq!(back, value);
    Some(value)
}

/// The checkpoint format. Input up to the first NUL byte is a checkpoint; after it, the
/// updates of a merge into it (split name to position, as a checkpoint's `splits`).
pub fn checkpoint(data: &[u8]) {
    let (first, rest) = match data.iter().position(|b| *b == 0) {
        Some(at) => (&data[..at], Some(&data[at + 1..])),
        None => (data, None),
    };
    let Some(committed) = round_trip::<Checkpoint>(first) else {
        return;
    };
    let Some(updates) = rest.and_then(|r| {
        serde_json::from_slice::<BTreeMap<String, jetflow_crds::checkpoint::SplitPosition>>(r).ok()
    }) else {
        return;
    };
    let Ok(next) = committed.merged(&updates, jiff::Timestamp::UNIX_EPOCH) else {
        return;
    };
    assert!(
        next.id > committed.id || committed.id == u64::MAX,
        "the id grows"
    );
    for (split, update) in &updates {
        assert_eq!(next.splits.get(split), Some(update));
    }
    for (split, position) in &committed.splits {
        let merged = &next.splits[split];
        assert!(
            merged.position >= position.position || merged.on_newer_stream_than(position),
            "{split}: {position:?} became {merged:?}"
        );
    }
}

/// The assignment format.
pub fn assignment(data: &[u8]) {
    let Some(assignment) = round_trip::<Assignment>(data) else {
        return;
    };
    for (split, owner) in &assignment.owners {
        assert!(assignment.splits_of(owner).any(|s| s == split));
    }
}
