//! The object store and its watch log: every object by (group, resource, namespace, name),
//! one resourceVersion counter for the whole store, and a bounded history of changes that
//! watches replay from. Writes are compare-and-swap on the resourceVersion; a write that
//! changes nothing is not a write (no new resourceVersion, no event), as on a real API server.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;
use tokio::sync::broadcast;

use super::status::ApiError;

/// How many changes the watch history keeps by default.
pub const HISTORY: usize = 10_000;

/// Where an object lives.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    /// API group, empty for core.
    pub group: String,
    /// Plural resource name.
    pub plural: String,
    /// Namespace, empty for cluster-scoped objects.
    pub namespace: String,
    /// Object name.
    pub name: String,
}

impl Key {
    /// A key.
    pub fn new(group: &str, plural: &str, namespace: &str, name: &str) -> Self {
        Self {
            group: group.into(),
            plural: plural.into(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

/// The kind of a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    /// Created.
    Added,
    /// Changed.
    Modified,
    /// Removed.
    Deleted,
}

/// One change of the store.
#[derive(Clone, Debug)]
pub struct Event {
    /// The resourceVersion of the change.
    pub rv: u64,
    /// What happened.
    pub type_: EventType,
    /// Which object.
    pub key: Key,
    /// The object after the change (the last state for a deletion).
    pub object: Arc<Value>,
    /// The object before the change, for a modification.
    pub old: Option<Arc<Value>>,
}

struct Inner {
    history: usize,
    objects: BTreeMap<Key, Value>,
    rv: u64,
    log: VecDeque<Arc<Event>>,
}

/// The store.
pub struct Store {
    inner: Mutex<Inner>,
    tx: broadcast::Sender<Arc<Event>>,
}

/// A watch's start: the changes after the asked resourceVersion, then the live ones.
pub struct Subscription {
    /// Changes already made, in order.
    pub backlog: Vec<Arc<Event>>,
    /// Changes to come.
    pub live: broadcast::Receiver<Arc<Event>>,
    /// The store's resourceVersion when subscribed.
    pub rv: u64,
}

/// The object's `metadata.resourceVersion`.
pub fn rv_of(obj: &Value) -> Option<&str> {
    obj.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
}

/// The object with what a no-op write may still change removed (resourceVersion, the times of
/// managedFields entries), for comparison.
fn normalized(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(meta) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
        if let Some(mf) = meta.get_mut("managedFields").and_then(Value::as_array_mut) {
            for entry in mf {
                if let Some(e) = entry.as_object_mut() {
                    e.remove("time");
                }
            }
        }
    }
    o
}

impl Store {
    /// An empty store whose watch history keeps the last `history` changes.
    pub fn new(history: usize) -> Self {
        let history = history.max(1);
        let (tx, _) = broadcast::channel(history);
        Self {
            inner: Mutex::new(Inner {
                history,
                objects: BTreeMap::new(),
                rv: 0,
                log: VecDeque::new(),
            }),
            tx,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One object.
    pub fn get(&self, key: &Key) -> Option<Value> {
        self.lock().objects.get(key).cloned()
    }

    /// The objects of a resource (in one namespace, or all when `namespace` is `None`), and the
    /// resourceVersion they are consistent with.
    pub fn list(&self, group: &str, plural: &str, namespace: Option<&str>) -> (Vec<Value>, u64) {
        let inner = self.lock();
        let items = Self::list_locked(&inner, group, plural, namespace);
        (items, inner.rv)
    }

    fn list_locked(
        inner: &Inner,
        group: &str,
        plural: &str,
        namespace: Option<&str>,
    ) -> Vec<Value> {
        let start = Key::new(group, plural, namespace.unwrap_or(""), "");
        inner
            .objects
            .range(start..)
            .take_while(|(k, _)| {
                k.group == group
                    && k.plural == plural
                    && namespace.is_none_or(|ns| k.namespace == ns)
            })
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Every object of every resource (garbage collection).
    pub fn all(&self) -> Vec<(Key, Value)> {
        self.lock()
            .objects
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Runs `f` over every object under the lock, without copying them (garbage collection).
    pub fn scan<R>(&self, f: impl FnOnce(&mut dyn Iterator<Item = (&Key, &Value)>) -> R) -> R {
        let inner = self.lock();
        f(&mut inner.objects.iter())
    }

    fn record(&self, inner: &mut Inner, event: Event) {
        let event = Arc::new(event);
        inner.log.push_back(event.clone());
        while inner.log.len() > inner.history {
            inner.log.pop_front();
        }
        let _ = self.tx.send(event);
    }

    /// Stores a new object; fails if it exists.
    pub fn create(&self, key: Key, mut obj: Value) -> Result<Value, ApiError> {
        let mut inner = self.lock();
        if inner.objects.contains_key(&key) {
            return Err(ApiError::already_exists(&key.group, &key.plural, &key.name));
        }
        inner.rv += 1;
        obj["metadata"]["resourceVersion"] = Value::String(inner.rv.to_string());
        inner.objects.insert(key.clone(), obj.clone());
        let rv = inner.rv;
        self.record(
            &mut inner,
            Event {
                rv,
                type_: EventType::Added,
                key,
                object: Arc::new(obj.clone()),
                old: None,
            },
        );
        Ok(obj)
    }

    /// Replaces an object whose resourceVersion is still `expected_rv`; a replacement equal to
    /// the stored object changes nothing and returns it as stored.
    pub fn replace(&self, key: &Key, mut obj: Value, expected_rv: &str) -> Result<Value, ApiError> {
        let mut inner = self.lock();
        let Some(old) = inner.objects.get(key) else {
            return Err(ApiError::not_found(&key.group, &key.plural, &key.name));
        };
        if rv_of(old) != Some(expected_rv) {
            return Err(ApiError::conflict(&key.group, &key.plural, &key.name));
        }
        if normalized(old) == normalized(&obj) {
            return Ok(old.clone());
        }
        let old = Arc::new(old.clone());
        inner.rv += 1;
        obj["metadata"]["resourceVersion"] = Value::String(inner.rv.to_string());
        inner.objects.insert(key.clone(), obj.clone());
        let rv = inner.rv;
        self.record(
            &mut inner,
            Event {
                rv,
                type_: EventType::Modified,
                key: key.clone(),
                object: Arc::new(obj.clone()),
                old: Some(old),
            },
        );
        Ok(obj)
    }

    /// Removes an object whose resourceVersion is still `expected_rv` (any when `None`).
    pub fn remove(&self, key: &Key, expected_rv: Option<&str>) -> Result<Value, ApiError> {
        let mut inner = self.lock();
        let Some(old) = inner.objects.get(key) else {
            return Err(ApiError::not_found(&key.group, &key.plural, &key.name));
        };
        if expected_rv.is_some_and(|rv| rv_of(old) != Some(rv)) {
            return Err(ApiError::conflict(&key.group, &key.plural, &key.name));
        }
        let mut obj = inner.objects.remove(key).unwrap_or_default();
        inner.rv += 1;
        obj["metadata"]["resourceVersion"] = Value::String(inner.rv.to_string());
        let rv = inner.rv;
        self.record(
            &mut inner,
            Event {
                rv,
                type_: EventType::Deleted,
                key: key.clone(),
                object: Arc::new(obj.clone()),
                old: None,
            },
        );
        Ok(obj)
    }

    /// Subscribes to the changes after `rv`; `Err` when they are older than the history.
    pub fn subscribe_after(&self, rv: u64) -> Result<Subscription, ApiError> {
        let inner = self.lock();
        let live = self.tx.subscribe();
        let oldest_kept = inner.log.front().map(|e| e.rv).unwrap_or(inner.rv + 1);
        if rv > inner.rv {
            // A resourceVersion from the future (a restarted server): start from now.
            return Ok(Subscription {
                backlog: Vec::new(),
                live,
                rv: inner.rv,
            });
        }
        if rv + 1 < oldest_kept && inner.log.len() >= inner.history {
            return Err(ApiError::expired(&rv.to_string()));
        }
        let backlog = inner.log.iter().filter(|e| e.rv > rv).cloned().collect();
        Ok(Subscription {
            backlog,
            live,
            rv: inner.rv,
        })
    }

    /// The objects of a resource now, and a subscription to what changes after them.
    pub fn snapshot(
        &self,
        group: &str,
        plural: &str,
        namespace: Option<&str>,
    ) -> (Vec<Value>, Subscription) {
        let inner = self.lock();
        let live = self.tx.subscribe();
        let items = Self::list_locked(&inner, group, plural, namespace);
        (
            items,
            Subscription {
                backlog: Vec::new(),
                live,
                rv: inner.rv,
            },
        )
    }
}
