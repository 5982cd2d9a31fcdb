//! Garbage collection as kube-controller-manager does it: objects whose owner references all
//! name objects that no longer exist are deleted through the ordinary delete path (so
//! finalizers hold them and every deletion is a watch event), and namespaces being deleted are
//! emptied, then removed. Runs every `interval` until shutdown; failures are logged and retried
//! on the next pass.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::Value;

use super::ops::{self, DeleteOptions};
use super::state::Shared;
use super::store::Key;

/// One pass: deletes orphans and empties terminating namespaces. Returns how many deletes it
/// made.
pub fn collect(state: &Shared) -> usize {
    // Under the store's lock: only the keys of what is to be deleted leave it.
    let (orphans, terminating, non_empty) = state.store.scan(|objects| {
        let objects: Vec<(&Key, &Value)> = objects.collect();
        let uids: HashSet<&str> = objects
            .iter()
            .filter_map(|(_, o)| o.pointer("/metadata/uid").and_then(Value::as_str))
            .collect();
        let terminating: HashSet<String> = objects
            .iter()
            .filter(|(k, o)| {
                k.group.is_empty()
                    && k.plural == "namespaces"
                    && o.pointer("/metadata/deletionTimestamp").is_some()
            })
            .map(|(k, _)| k.name.clone())
            .collect();
        let mut non_empty: HashSet<String> = HashSet::new();
        let mut orphans: Vec<Key> = Vec::new();
        for (key, obj) in &objects {
            let in_terminating = !key.namespace.is_empty() && terminating.contains(&key.namespace);
            if in_terminating {
                non_empty.insert(key.namespace.clone());
            }
            let refs = obj
                .pointer("/metadata/ownerReferences")
                .and_then(Value::as_array);
            let orphaned = refs.is_some_and(|refs| {
                !refs.is_empty()
                    && refs.iter().all(|r| {
                        r.get("uid")
                            .and_then(Value::as_str)
                            .is_none_or(|u| !uids.contains(u))
                    })
            });
            if (orphaned || in_terminating) && obj.pointer("/metadata/deletionTimestamp").is_none()
            {
                orphans.push((*key).clone());
            }
        }
        (orphans, terminating, non_empty)
    });
    let registry = state.registry();
    let mut deleted = 0;
    for key in orphans {
        let Some(info) = registry
            .all()
            .find(|r| r.group == key.group && r.plural == key.plural)
            .cloned()
        else {
            continue;
        };
        match ops::delete(
            state,
            &info,
            &key.namespace,
            &key.name,
            &DeleteOptions::default(),
        ) {
            Ok(_) => deleted += 1,
            Err(e) if e.code == 404 => {}
            Err(e) => {
                tracing::warn!(error = %e, object = %key.name, "garbage collection could not delete")
            }
        }
    }
    for ns in terminating
        .iter()
        .filter(|ns| !non_empty.contains(ns.as_str()))
    {
        let key = Key::new("", "namespaces", "", ns);
        if state.store.remove(&key, None).is_ok() {
            deleted += 1;
        }
    }
    deleted
}

/// Runs the collector until shutdown.
pub async fn run(state: Shared, interval: Duration) {
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        // A pass that deleted something is followed at once by another (dependents of dependents).
        while collect(&state) > 0 && !state.shutdown.is_cancelled() {}
    }
}
