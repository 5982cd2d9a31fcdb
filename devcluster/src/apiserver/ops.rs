//! The write paths as the API server runs them: create, update, patch (merge, JSON, apply),
//! delete with finalizers and the pod grace contract, each through CRD admission and the
//! store's compare-and-swap. A write that changes nothing returns the stored object as is.

use serde_json::{Value, json};

use super::patch;
use super::resources::ResourceInfo;
use super::state::State;
use super::status::ApiError;
use super::store::{Key, rv_of};
use crate::admission;

/// How a patch body is to be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchKind {
    /// `application/merge-patch+json`.
    Merge,
    /// `application/strategic-merge-patch+json`.
    Strategic,
    /// `application/json-patch+json`.
    Json,
    /// `application/apply-patch+yaml`.
    Apply,
}

/// Options of a write.
#[derive(Clone, Debug, Default)]
pub struct WriteOptions {
    /// `fieldManager`.
    pub manager: Option<String>,
    /// `force` (apply).
    pub force: bool,
    /// `fieldValidation=Strict`.
    pub strict: bool,
    /// `dryRun=All`.
    pub dry_run: bool,
    /// The manager of a non-apply write when `fieldManager` is not given (the User-Agent's
    /// first word, as the API server does).
    pub default_manager: String,
    /// Set internally for server-side apply, which records its own field ownership.
    pub applying: bool,
}

impl WriteOptions {
    fn update_manager(&self) -> String {
        self.manager
            .clone()
            .filter(|m| !m.is_empty())
            .or_else(|| Some(self.default_manager.clone()).filter(|m| !m.is_empty()))
            .unwrap_or_else(|| "jetflow-devcluster".into())
    }
}

fn status_scope(info: &ResourceInfo, sub: Option<&str>) -> Option<bool> {
    if sub == Some("status") {
        Some(true)
    } else if info.status {
        Some(false)
    } else {
        None
    }
}

/// Options of a delete.
#[derive(Clone, Debug, Default)]
pub struct DeleteOptions {
    /// `gracePeriodSeconds`.
    pub grace: Option<i64>,
    /// `propagationPolicy`.
    pub orphan: bool,
    /// `preconditions.resourceVersion`.
    pub rv: Option<String>,
    /// `preconditions.uid`.
    pub uid: Option<String>,
}

/// The result of a write: the object and the warnings for `Warning` headers.
pub type Written = (Value, Vec<String>);

/// Now, as the API server writes times.
pub fn now() -> String {
    super::now()
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
}

/// The key of an object of `info` named `name` in `namespace`.
pub fn key(info: &ResourceInfo, namespace: &str, name: &str) -> Key {
    Key::new(
        &info.group,
        &info.plural,
        if info.namespaced { namespace } else { "" },
        name,
    )
}

fn admit(
    state: &State,
    info: &ResourceInfo,
    sub: Option<&str>,
    old: Option<&Value>,
    obj: &mut Value,
    opts: &WriteOptions,
) -> Result<Vec<String>, ApiError> {
    if !info.custom {
        return Ok(Vec::new());
    }
    let request = admission::Request {
        group: &info.group,
        version: &info.version,
        resource: &info.plural,
        subresource: sub,
        old,
        strict: opts.strict,
    };
    let admission = state
        .admission
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    admission
        .admit(&request, obj)
        .map_err(|invalid| ApiError::from_status(invalid.to_status()))
}

fn spec_part(info: &ResourceInfo, obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("metadata");
        m.remove("apiVersion");
        m.remove("kind");
        if info.status {
            m.remove("status");
        }
    }
    o
}

/// Creates an object (POST, or an apply of an absent object).
pub fn create(
    state: &State,
    info: &ResourceInfo,
    namespace: &str,
    mut obj: Value,
    opts: &WriteOptions,
) -> Result<Written, ApiError> {
    if !obj.is_object() {
        return Err(ApiError::bad_request("the body is not an object"));
    }
    if info.namespaced {
        if let Some(ns) =
            meta_str(&obj, "namespace").filter(|ns| !ns.is_empty() && *ns != namespace)
        {
            return Err(ApiError::bad_request(format!(
                "the namespace of the provided object ({ns}) does not match the namespace sent on the request ({namespace})"
            )));
        }
        let ns_obj = state.store.get(&Key::new("", "namespaces", "", namespace));
        match ns_obj {
            None => return Err(ApiError::not_found("", "namespaces", namespace)),
            Some(ns)
                if ns.pointer("/metadata/deletionTimestamp").is_some()
                    && info.plural != "events" =>
            {
                return Err(ApiError::forbidden(format!(
                    "{} \"{}\" is forbidden: unable to create new content in namespace {namespace} because it is being terminated",
                    info.plural,
                    meta_str(&obj, "name").unwrap_or("")
                )));
            }
            Some(_) => {}
        }
    }
    obj["apiVersion"] = json!(info.api_version());
    obj["kind"] = json!(info.kind);
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    let name = match meta_str(&obj, "name").filter(|n| !n.is_empty()) {
        Some(n) => n.to_string(),
        None => match meta_str(&obj, "generateName").filter(|n| !n.is_empty()) {
            Some(prefix) => format!(
                "{prefix}{}",
                &uuid::Uuid::new_v4().simple().to_string()[..5]
            ),
            None => {
                return Err(ApiError::invalid(
                    &info.kind,
                    &info.group,
                    "",
                    "metadata.name: Required value: name or generateName is required",
                ));
            }
        },
    };
    let meta = obj["metadata"]
        .as_object_mut()
        .ok_or_else(|| ApiError::bad_request("metadata is not an object"))?;
    meta.insert("name".into(), json!(name));
    if info.namespaced {
        meta.insert("namespace".into(), json!(namespace));
    } else {
        meta.remove("namespace");
    }
    meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    meta.insert("creationTimestamp".into(), json!(now()));
    meta.insert("generation".into(), json!(1));
    meta.remove("resourceVersion");
    meta.remove("deletionTimestamp");
    meta.remove("deletionGracePeriodSeconds");
    if info.status
        && let Some(m) = obj.as_object_mut()
    {
        m.remove("status");
    }
    match (info.group.as_str(), info.plural.as_str()) {
        ("", "namespaces") => obj["status"] = json!({"phase": "Active"}),
        ("", "pods") => obj["status"] = json!({"phase": "Pending"}),
        ("", "secrets")
            if obj
                .get("type")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty) =>
        {
            obj["type"] = json!("Opaque")
        }
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            let names = obj.pointer("/spec/names").cloned().unwrap_or(json!({}));
            obj["status"] = json!({
                "acceptedNames": names,
                "conditions": [
                    {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": now()},
                    {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": now()},
                ],
                "storedVersions": [ResourceInfo::from_crd(&obj).map(|i| i.version).unwrap_or_default()],
            });
        }
        _ => {}
    }
    if obj.pointer("/metadata/managedFields").is_none() {
        patch::record_update(
            None,
            &mut obj,
            &opts.update_manager(),
            &info.api_version(),
            status_scope(info, None),
        );
    }
    let warnings = admit(state, info, None, None, &mut obj, opts)?;
    if opts.dry_run {
        return Ok((obj, warnings));
    }
    let stored = state.store.create(key(info, namespace, &name), obj)?;
    after_write(state, info, namespace, None, Some(&stored))?;
    Ok((stored, warnings))
}

/// What the API server does beside the store when an object changes.
fn after_write(
    state: &State,
    info: &ResourceInfo,
    _ns: &str,
    _old: Option<&Value>,
    new: Option<&Value>,
) -> Result<(), ApiError> {
    match (info.group.as_str(), info.plural.as_str(), new) {
        ("", "namespaces", Some(ns)) => {
            let name = meta_str(ns, "name").unwrap_or_default().to_string();
            if state
                .store
                .get(&Key::new("", "serviceaccounts", &name, "default"))
                .is_none()
                && ns.pointer("/metadata/deletionTimestamp").is_none()
            {
                let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}});
                if let Some(sa_info) = state.resource("", "v1", "serviceaccounts") {
                    let _ = create(state, &sa_info, &name, sa, &WriteOptions::default());
                }
            }
        }
        ("apiextensions.k8s.io", "customresourcedefinitions", Some(crd)) => state.register_crd(crd),
        _ => {}
    }
    Ok(())
}

/// The object a write of `new` over `old` stores: status and spec kept apart by the status
/// subresource, metadata the server owns kept, generation moved when the spec changed.
fn merge_write(info: &ResourceInfo, old: &Value, mut new: Value, sub: Option<&str>) -> Value {
    if sub == Some("status") {
        let mut out = old.clone();
        match new.get("status") {
            Some(s) => out["status"] = s.clone(),
            None => {
                if let Some(m) = out.as_object_mut() {
                    m.remove("status");
                }
            }
        }
        if let Some(mf) = new.pointer("/metadata/managedFields") {
            out["metadata"]["managedFields"] = mf.clone();
        }
        return out;
    }
    if !new.get("metadata").is_some_and(Value::is_object) {
        new["metadata"] = json!({});
    }
    if info.status {
        match old.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                if let Some(m) = new.as_object_mut() {
                    m.remove("status");
                }
            }
        }
    }
    new["apiVersion"] = old["apiVersion"].clone();
    new["kind"] = old["kind"].clone();
    for field in [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ] {
        match old["metadata"].get(field) {
            Some(v) => new["metadata"][field] = v.clone(),
            None => {
                if let Some(m) = new["metadata"].as_object_mut() {
                    m.remove(field);
                }
            }
        }
    }
    if new.pointer("/metadata/managedFields").is_none()
        && let Some(mf) = old.pointer("/metadata/managedFields")
    {
        new["metadata"]["managedFields"] = mf.clone();
    }
    if spec_part(info, old) != spec_part(info, &new) {
        let generation = old
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        new["metadata"]["generation"] = json!(generation + 1);
    }
    new
}

/// Whether a write would change nothing (as the store judges it).
fn normalized_eq(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(mf) = v
            .pointer_mut("/metadata/managedFields")
            .and_then(Value::as_array_mut)
        {
            for e in mf {
                if let Some(e) = e.as_object_mut() {
                    e.remove("time");
                }
            }
        }
        v
    };
    strip(a) == strip(b)
}

fn finalizers_empty(obj: &Value) -> bool {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_none_or(|f| f.is_empty())
}

/// Writes `compute(old)` over the stored object, retrying on a concurrent write unless the
/// caller pinned a resourceVersion. `compute` returns the whole new object as the client sent
/// it (before the server's own fields are kept).
pub fn update_with(
    state: &State,
    info: &ResourceInfo,
    namespace: &str,
    name: &str,
    sub: Option<&str>,
    opts: &WriteOptions,
    mut compute: impl FnMut(&Value) -> Result<Value, ApiError>,
) -> Result<Written, ApiError> {
    let key = key(info, namespace, name);
    loop {
        let Some(old) = state.store.get(&key) else {
            return Err(ApiError::not_found(&info.group, &info.plural, name));
        };
        let old_rv = rv_of(&old).unwrap_or_default().to_string();
        let new = compute(&old)?;
        let pinned = rv_of(&new).filter(|rv| !rv.is_empty()).map(String::from);
        if let Some(rv) = &pinned
            && *rv != old_rv
        {
            return Err(ApiError::conflict(&info.group, &info.plural, name));
        }
        if let Some(n) = meta_str(&new, "name")
            && n != name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        let mut merged = merge_write(info, &old, new, sub);
        if !opts.applying {
            let manager = opts.update_manager();
            patch::record_update(
                Some(&old),
                &mut merged,
                &manager,
                &info.api_version(),
                status_scope(info, sub),
            );
        }
        let warnings = admit(state, info, sub, Some(&old), &mut merged, opts)?;
        if opts.dry_run {
            merged["metadata"]["resourceVersion"] = json!(old_rv);
            if normalized_eq(&old, &merged) {
                return Ok((old, warnings));
            }
            return Ok((merged, warnings));
        }
        let deleting = merged.pointer("/metadata/deletionTimestamp").is_some()
            && finalizers_empty(&merged)
            && !(info.group.is_empty()
                && info.plural == "pods"
                && merged.pointer("/spec/nodeName").is_some());
        let result = if deleting {
            state.store.remove(&key, Some(&old_rv))
        } else {
            state.store.replace(&key, merged, &old_rv)
        };
        match result {
            Ok(stored) => {
                if !deleting {
                    after_write(state, info, namespace, Some(&old), Some(&stored))?;
                } else {
                    after_delete(state, info, &stored);
                }
                return Ok((stored, warnings));
            }
            Err(e) if e.reason == "Conflict" && pinned.is_none() => continue,
            Err(e) => return Err(e),
        }
    }
}

/// PUT.
pub fn replace(
    state: &State,
    info: &ResourceInfo,
    namespace: &str,
    name: &str,
    sub: Option<&str>,
    body: Value,
    opts: &WriteOptions,
) -> Result<Written, ApiError> {
    update_with(
        state,
        info,
        namespace,
        name,
        sub,
        opts,
        |_| Ok(body.clone()),
    )
}

/// PATCH of any kind; an apply of an absent object creates it.
#[allow(clippy::too_many_arguments)]
pub fn patch(
    state: &State,
    info: &ResourceInfo,
    namespace: &str,
    name: &str,
    sub: Option<&str>,
    kind: PatchKind,
    body: Value,
    opts: &WriteOptions,
) -> Result<Written, ApiError> {
    let status_only = if sub == Some("status") {
        Some(true)
    } else if info.status {
        Some(false)
    } else {
        None
    };
    if kind == PatchKind::Apply {
        if body.get("apiVersion").is_none() || body.get("kind").is_none() {
            return Err(ApiError::bad_request(
                "apiVersion and kind must be set in an applied configuration",
            ));
        }
        if opts.manager.as_deref().unwrap_or("").is_empty() {
            return Err(ApiError::bad_request(
                "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
            ));
        }
        if state.store.get(&key(info, namespace, name)).is_none() {
            if sub.is_some() {
                return Err(ApiError::not_found(&info.group, &info.plural, name));
            }
            let base = json!({"apiVersion": info.api_version(), "kind": info.kind, "metadata": {"name": name}});
            let manager = opts.manager.clone().unwrap_or_default();
            let mut obj = patch::apply(
                &base,
                &body,
                &manager,
                opts.force,
                &info.api_version(),
                status_only.map(|_| false),
            )?;
            if let Some(m) = obj["metadata"].as_object_mut() {
                m.insert("name".into(), json!(name));
            }
            return match create(state, info, namespace, obj, opts) {
                Err(e) if e.reason == "AlreadyExists" => {
                    patch(state, info, namespace, name, sub, kind, body, opts)
                }
                other => other,
            };
        }
    }
    let manager = opts.manager.clone().unwrap_or_default();
    let opts = &WriteOptions {
        applying: kind == PatchKind::Apply,
        ..opts.clone()
    };
    update_with(state, info, namespace, name, sub, opts, |old| {
        let mut target = old.clone();
        if kind == PatchKind::Json {
            // A JSON patch may `test` the resourceVersion; it pins the write only if it changes it.
            patch::json_patch(&mut target, &body)?;
            if rv_of(&target) == rv_of(old)
                && let Some(m) = target["metadata"].as_object_mut()
            {
                m.remove("resourceVersion");
            }
            return Ok(target);
        }
        if let Some(m) = target["metadata"].as_object_mut() {
            m.remove("resourceVersion");
        }
        match kind {
            PatchKind::Merge => patch::merge(&mut target, &body),
            PatchKind::Strategic => patch::strategic_merge(&mut target, &body),
            PatchKind::Json => patch::json_patch(&mut target, &body)?,
            PatchKind::Apply => {
                target = patch::apply(
                    &target,
                    &body,
                    &manager,
                    opts.force,
                    &info.api_version(),
                    status_only,
                )?;
            }
        }
        Ok(target)
    })
}

/// DELETE of one object. Returns the object (still there when finalizers or the pod's grace
/// period hold it, or as it was when removed).
pub fn delete(
    state: &State,
    info: &ResourceInfo,
    namespace: &str,
    name: &str,
    opts: &DeleteOptions,
) -> Result<Value, ApiError> {
    let key = key(info, namespace, name);
    loop {
        let Some(old) = state.store.get(&key) else {
            return Err(ApiError::not_found(&info.group, &info.plural, name));
        };
        let old_rv = rv_of(&old).unwrap_or_default().to_string();
        if opts.rv.as_ref().is_some_and(|rv| *rv != old_rv)
            || opts
                .uid
                .as_deref()
                .is_some_and(|u| Some(u) != meta_str(&old, "uid"))
        {
            return Err(ApiError::conflict(&info.group, &info.plural, name));
        }
        let is_pod = info.group.is_empty() && info.plural == "pods";
        let scheduled_pod = is_pod
            && old
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .is_some_and(|n| !n.is_empty());
        let graceful = scheduled_pod && opts.grace != Some(0);
        let is_namespace = info.group.is_empty() && info.plural == "namespaces";
        if opts.orphan {
            orphan_dependents(state, &old);
        }
        let result = if !finalizers_empty(&old) || graceful || is_namespace {
            if old.pointer("/metadata/deletionTimestamp").is_some() {
                if scheduled_pod && !graceful && finalizers_empty(&old) {
                    state.store.remove(&key, Some(&old_rv)).map(|o| (o, true))
                } else {
                    return Ok(old);
                }
            } else {
                let mut marked = old.clone();
                marked["metadata"]["deletionTimestamp"] = json!(now());
                let grace = if graceful {
                    opts.grace
                        .or_else(|| {
                            old.pointer("/spec/terminationGracePeriodSeconds")
                                .and_then(Value::as_i64)
                        })
                        .unwrap_or(30)
                } else {
                    0
                };
                marked["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
                if is_namespace {
                    marked["status"]["phase"] = json!("Terminating");
                }
                if scheduled_pod && !graceful && finalizers_empty(&old) {
                    state.store.remove(&key, Some(&old_rv)).map(|o| (o, true))
                } else {
                    state
                        .store
                        .replace(&key, marked, &old_rv)
                        .map(|o| (o, false))
                }
            }
        } else {
            state.store.remove(&key, Some(&old_rv)).map(|o| (o, true))
        };
        match result {
            Ok((obj, removed)) => {
                if removed {
                    after_delete(state, info, &obj);
                }
                return Ok(obj);
            }
            Err(e) if e.reason == "Conflict" && opts.rv.is_none() => continue,
            Err(e) => return Err(e),
        }
    }
}

fn after_delete(state: &State, info: &ResourceInfo, obj: &Value) {
    if info.group == "apiextensions.k8s.io" && info.plural == "customresourcedefinitions" {
        state.unregister_crd(obj);
        // Its objects go with it, each with a DELETED event.
        if let Some(served) = ResourceInfo::from_crd(obj) {
            let (items, _) = state.store.list(&served.group, &served.plural, None);
            for item in items {
                let ns = meta_str(&item, "namespace").unwrap_or("");
                let name = meta_str(&item, "name").unwrap_or("");
                let _ = state.store.remove(&key(&served, ns, name), None);
            }
        }
    }
}

/// Removes the owner references to `owner` from its dependents (orphan propagation).
fn orphan_dependents(state: &State, owner: &Value) {
    let Some(uid) = meta_str(owner, "uid") else {
        return;
    };
    for (key, obj) in state.store.all() {
        let refs = obj
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array);
        if refs.is_some_and(|r| {
            r.iter()
                .any(|o| o.get("uid").and_then(Value::as_str) == Some(uid))
        }) {
            let mut new = obj.clone();
            if let Some(r) = new["metadata"]["ownerReferences"].as_array_mut() {
                r.retain(|o| o.get("uid").and_then(Value::as_str) != Some(uid));
            }
            let _ = state
                .store
                .replace(&key, new, rv_of(&obj).unwrap_or_default());
        }
    }
}
