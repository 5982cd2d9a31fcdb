//! The split assignment: which worker owns which split, under a generation number that grows
//! with every change. The operator publishes it (a ConfigMap); locally it is a file.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Which worker owns each split.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Assignment {
    /// Increases with every change of owners.
    pub generation: u64,
    /// Owner (worker name, the pod name in a cluster) by split name.
    #[serde(default)]
    pub owners: BTreeMap<String, String>,
}

impl Assignment {
    /// The splits owned by `worker`, in name order.
    pub fn splits_of<'a>(&'a self, worker: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.owners
            .iter()
            .filter(move |(_, owner)| owner.as_str() == worker)
            .map(|(split, _)| split.as_str())
    }
}
