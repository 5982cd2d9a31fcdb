//! Patches: JSON merge patch (strategic merge is served as a merge patch), JSON patch, and
//! server-side apply with field ownership in `metadata.managedFields` (leaves and lists are
//! owned whole; a field another manager owns with a different value is a conflict unless
//! `force`; a field a manager stops applying is removed unless another manager owns it).

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use super::status::ApiError;

/// A field path: the keys from the object's root.
type Path = Vec<String>;

/// Applies a JSON merge patch (RFC 7386).
pub fn merge(target: &mut Value, patch: &Value) {
    json_patch::merge(target, patch);
}

/// The keys lists of objects are merged by in a strategic merge patch (containers, env,
/// volumes by `name`; conditions by `type`; ports; mounts).
const MERGE_KEYS: &[&str] = &["name", "type", "containerPort", "mountPath", "port", "uid"];

/// Applies a strategic merge patch the way kubectl's patches need it: maps merge, lists of
/// objects that all carry one of [`MERGE_KEYS`] merge element by element (`$patch: delete`
/// removes one), other lists replace, and the directives (`$setElementOrder/...`,
/// `$retainKeys`, `$deleteFromPrimitiveList/...`) are honoured enough not to be stored.
pub fn strategic_merge(target: &mut Value, patch: &Value) {
    let Some(p) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    match p.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut clean = patch.clone();
            strip_directives(&mut clean);
            *target = clean;
            return;
        }
        Some("delete") => {
            *target = Value::Null;
            return;
        }
        _ => {}
    }
    if !target.is_object() {
        *target = json!({});
    }
    let Some(t) = target.as_object_mut() else {
        return;
    };
    for (k, v) in p {
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(list), Some(remove)) =
                (t.get_mut(field).and_then(Value::as_array_mut), v.as_array())
            {
                list.retain(|item| !remove.contains(item));
            }
            continue;
        }
        if k.starts_with('$') {
            continue;
        }
        match v {
            Value::Null => {
                t.remove(k);
            }
            Value::Object(_) => {
                let slot = t.entry(k.clone()).or_insert(Value::Null);
                strategic_merge(slot, v);
                if slot.is_null() {
                    t.remove(k);
                }
            }
            Value::Array(items) => {
                let key = MERGE_KEYS.iter().find(|key| {
                    !items.is_empty()
                        && items
                            .iter()
                            .all(|i| i.get(**key).is_some_and(|v| !v.is_null()))
                });
                match (key, t.get_mut(k).and_then(Value::as_array_mut)) {
                    (Some(key), Some(existing)) => {
                        for item in items {
                            let id = &item[*key];
                            let pos = existing.iter().position(|e| e.get(*key) == Some(id));
                            let delete =
                                item.get("$patch").and_then(Value::as_str) == Some("delete");
                            match (pos, delete) {
                                (Some(i), true) => {
                                    existing.remove(i);
                                }
                                (None, true) => {}
                                (Some(i), false) => strategic_merge(&mut existing[i], item),
                                (None, false) => {
                                    let mut clean = item.clone();
                                    strip_directives(&mut clean);
                                    existing.push(clean);
                                }
                            }
                        }
                    }
                    _ => {
                        let mut clean = v.clone();
                        strip_directives(&mut clean);
                        t.insert(k.clone(), clean);
                    }
                }
            }
            _ => {
                t.insert(k.clone(), v.clone());
            }
        }
    }
}

fn strip_directives(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|k, _| !k.starts_with('$'));
            m.values_mut().for_each(strip_directives);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_directives),
        _ => {}
    }
}

/// Applies a JSON patch (RFC 6902).
///
/// As the API server (evanphx/json-patch) does, a `test` of a missing path against `null`
/// passes: kube-runtime's finalizer helper starts with `test /metadata/finalizers null`.
pub fn json_patch(target: &mut Value, patch: &Value) -> Result<(), ApiError> {
    let mut patch = patch.clone();
    if let Some(ops) = patch.as_array_mut() {
        ops.retain(|op| {
            let missing_null_test = op.get("op").and_then(Value::as_str) == Some("test")
                && op.get("value").is_some_and(Value::is_null)
                && op
                    .get("path")
                    .and_then(Value::as_str)
                    .is_some_and(|p| target.pointer(p).is_none());
            !missing_null_test
        });
    }
    let ops: json_patch::Patch = serde_json::from_value(patch)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
    json_patch::patch(target, &ops)
        .map_err(|e| ApiError::invalid("", "", "", &format!("the JSON patch failed: {e}")))
}

fn skip(path: &[String], status_only: Option<bool>) -> bool {
    match path {
        [] => true,
        [first] if first == "apiVersion" || first == "kind" => true,
        [m, f]
            if m == "metadata"
                && [
                    "name",
                    "namespace",
                    "resourceVersion",
                    "managedFields",
                    "uid",
                    "creationTimestamp",
                    "generation",
                ]
                .contains(&f.as_str()) =>
        {
            true
        }
        [first, ..] => match status_only {
            Some(true) => first != "status",
            Some(false) => first == "status",
            None => false,
        },
    }
}

/// The leaf paths an applied configuration sets.
fn leaves(value: &Value, prefix: &mut Path, out: &mut BTreeSet<Path>, status_only: Option<bool>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                prefix.push(k.clone());
                leaves(v, prefix, out, status_only);
                prefix.pop();
            }
        }
        _ => {
            if !skip(prefix, status_only) {
                out.insert(prefix.clone());
            }
        }
    }
}

/// Leaves as a FieldsV1 trie (`{"f:spec":{"f:replicas":{}}}`).
fn to_fields_v1(paths: &BTreeSet<Path>) -> Value {
    let mut root = Map::new();
    for path in paths {
        let mut cur = &mut root;
        for key in path {
            let entry = cur.entry(format!("f:{key}")).or_insert_with(|| json!({}));
            cur = match entry.as_object_mut() {
                Some(m) => m,
                None => break,
            };
        }
    }
    Value::Object(root)
}

/// The leaves of a FieldsV1 trie (entries other than `f:` end the path there).
fn from_fields_v1(fields: &Value, prefix: &mut Path, out: &mut BTreeSet<Path>) {
    let children: Vec<(&String, &Value)> = fields
        .as_object()
        .map(|m| m.iter().filter(|(k, _)| k.starts_with("f:")).collect())
        .unwrap_or_default();
    if children.is_empty() {
        if !prefix.is_empty() {
            out.insert(prefix.clone());
        }
        return;
    }
    for (k, v) in children {
        prefix.push(k[2..].to_string());
        from_fields_v1(v, prefix, out);
        prefix.pop();
    }
}

fn at<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(obj, |cur, k| cur.get(k))
}

/// Removes the field at `path`, and every map on the way to it that the removal leaves empty:
/// a manager that stops applying `status.lastCheckpoint` owned the struct as well as its
/// fields, so the struct goes too rather than staying as `{}` (which its schema may refuse).
fn remove_at(obj: &mut Value, path: &[String]) {
    fn remove(cur: &mut Value, path: &[String]) -> bool {
        let Some((first, rest)) = path.split_first() else {
            return false;
        };
        let Some(map) = cur.as_object_mut() else {
            return false;
        };
        if rest.is_empty() {
            map.remove(first);
        } else if let Some(child) = map.get_mut(first)
            && remove(child, rest)
        {
            map.remove(first);
        }
        map.is_empty()
    }
    // The object itself and its top-level parts (metadata, spec, status) stay.
    if let Some((first, rest)) = path.split_first()
        && let Some(child) = obj.get_mut(first)
    {
        if rest.is_empty() {
            if let Some(m) = obj.as_object_mut() {
                m.remove(first);
            }
        } else {
            remove(child, rest);
        }
    }
}

fn overlaps(a: &[String], b: &[String]) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// Whether the subtree at `path` is outside what this apply may touch.
fn excluded(path: &[String], status_only: Option<bool>) -> bool {
    match (path.first(), status_only) {
        (Some(first), Some(true)) => first != "status",
        (Some(first), Some(false)) => first == "status",
        _ => false,
    }
}

/// Merges an applied configuration into an object: maps merge, everything else replaces.
fn merge_applied(
    target: &mut Value,
    applied: &Value,
    prefix: &mut Path,
    status_only: Option<bool>,
) {
    let (Some(t), Some(a)) = (target.as_object_mut(), applied.as_object()) else {
        return;
    };
    for (k, v) in a {
        prefix.push(k.clone());
        if !excluded(prefix, status_only) {
            match v {
                Value::Object(m) if !m.is_empty() => {
                    if !t.get(k).is_some_and(Value::is_object) {
                        t.insert(k.clone(), json!({}));
                    }
                    if let Some(slot) = t.get_mut(k) {
                        merge_applied(slot, v, prefix, status_only);
                    }
                }
                _ if skip(prefix, status_only) => {}
                Value::Null => {
                    t.remove(k);
                }
                _ => {
                    t.insert(k.clone(), v.clone());
                }
            }
        }
        prefix.pop();
    }
}

/// Server-side apply of `applied` by `manager` onto `current` (a fresh object when creating).
/// `status_only` is `Some(true)` for the status subresource, `Some(false)` for the main
/// resource of a kind with a status subresource, `None` otherwise.
pub fn apply(
    current: &Value,
    applied: &Value,
    manager: &str,
    force: bool,
    api_version: &str,
    status_only: Option<bool>,
) -> Result<Value, ApiError> {
    let subresource = if status_only == Some(true) {
        "status"
    } else {
        ""
    };
    let mut new_paths = BTreeSet::new();
    leaves(applied, &mut Vec::new(), &mut new_paths, status_only);

    let mut entries: Vec<Value> = current
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut own_old = BTreeSet::new();
    let mut others: Vec<(usize, BTreeSet<Path>)> = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let mut set = BTreeSet::new();
        from_fields_v1(
            entry.get("fieldsV1").unwrap_or(&Value::Null),
            &mut Vec::new(),
            &mut set,
        );
        let m = entry.get("manager").and_then(Value::as_str).unwrap_or("");
        let sub = entry
            .get("subresource")
            .and_then(Value::as_str)
            .unwrap_or("");
        let op = entry.get("operation").and_then(Value::as_str).unwrap_or("");
        if m == manager && sub == subresource && op == "Apply" {
            own_old = set;
        } else {
            others.push((i, set));
        }
    }

    // Conflicts: a field another manager owns that this apply sets to a different value.
    let mut conflicts: Vec<(String, String)> = Vec::new();
    for (i, set) in &others {
        let name = entries[*i]
            .get("manager")
            .and_then(Value::as_str)
            .unwrap_or("");
        let version = entries[*i]
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or(api_version);
        // As the API server words it: `conflict with "kubectl-edit" using apps/v1`.
        let m = format!("{name}\" using {version}");
        for p in &new_paths {
            if set.iter().any(|o| overlaps(o, p))
                && at(current, p) != at(applied, p)
                && at(current, p).is_some()
            {
                conflicts.push((m.clone(), format!(".{}", p.join("."))));
            }
        }
    }
    if !conflicts.is_empty() && !force {
        let n = conflicts.len();
        let causes: Vec<Value> = conflicts
            .iter()
            .map(|(m, f)| json!({"type": "FieldManagerConflict", "message": format!("conflict with \"{m}"), "field": f}))
            .collect();
        let list: Vec<String> = conflicts
            .iter()
            .map(|(m, f)| format!("- {f}: conflict with \"{m}"))
            .collect();
        let message = if n == 1 {
            format!(
                "Apply failed with 1 conflict: conflict with \"{}: {}",
                conflicts[0].0, conflicts[0].1
            )
        } else {
            format!("Apply failed with {n} conflicts: {}", list.join("\n"))
        };
        return Err(ApiError::conflict_with(message, json!({"causes": causes})));
    }

    let mut obj = current.clone();
    // Fields this manager no longer applies and nobody else owns go away.
    for p in own_old.difference(&new_paths) {
        if !others
            .iter()
            .any(|(_, set)| set.iter().any(|o| overlaps(o, p)))
            && !new_paths.iter().any(|n| overlaps(n, p))
        {
            remove_at(&mut obj, p);
        }
    }
    merge_applied(&mut obj, applied, &mut Vec::new(), status_only);

    // Forced fields move to this manager.
    if force {
        for (i, set) in &mut others {
            let before = set.len();
            set.retain(|o| {
                !conflicts.iter().any(|(_, f)| {
                    overlaps(o, &f[1..].split('.').map(String::from).collect::<Vec<_>>())
                })
            });
            if set.len() != before {
                entries[*i]["fieldsV1"] = to_fields_v1(set);
            }
        }
        entries.retain(|e| {
            e.get("fieldsV1")
                .and_then(Value::as_object)
                .is_none_or(|m| !m.is_empty())
        });
    }
    let own = |e: &Value| {
        e.get("manager").and_then(Value::as_str) == Some(manager)
            && e.get("operation").and_then(Value::as_str) == Some("Apply")
            && e.get("subresource").and_then(Value::as_str).unwrap_or("") == subresource
    };
    // The manager's entry keeps its place among the others, so that an apply that changes
    // nothing leaves the object as it was: no write, no new resourceVersion, no watch event.
    let position = entries.iter().position(own);
    let previous_time = position.and_then(|i| entries[i].get("time").cloned());
    entries.retain(|e| !own(e));
    let mut entry = json!({
        "manager": manager,
        "operation": "Apply",
        "apiVersion": api_version,
        "time": previous_time.filter(|_| own_old == new_paths).unwrap_or_else(|| json!(super::now())),
        "fieldsType": "FieldsV1",
        "fieldsV1": to_fields_v1(&new_paths),
    });
    if !subresource.is_empty() {
        entry["subresource"] = json!(subresource);
    }
    entries.insert(position.unwrap_or(entries.len()).min(entries.len()), entry);
    obj["metadata"]["managedFields"] = Value::Array(entries);
    Ok(obj)
}

/// The leaf paths whose value `new` sets differently from `old` (added or changed), within
/// the part of the object `status_only` selects.
fn changed_leaves(old: Option<&Value>, new: &Value, status_only: Option<bool>) -> BTreeSet<Path> {
    let mut all = BTreeSet::new();
    leaves(new, &mut Vec::new(), &mut all, status_only);
    all.into_iter()
        .filter(|p| {
            !(p.first().is_some_and(|f| f == "metadata")
                && p.get(1)
                    .is_some_and(|f| f == "deletionTimestamp" || f == "deletionGracePeriodSeconds"))
        })
        .filter(|p| old.is_none_or(|o| at(o, p) != at(new, p)))
        .collect()
}

/// Records a non-apply write (create, update, merge or JSON patch) by `manager` in
/// `metadata.managedFields` as the API server does: the fields it set or changed become that
/// manager's (operation `Update`), taken from any other manager without conflict.
pub fn record_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    api_version: &str,
    status_only: Option<bool>,
) {
    let subresource = if status_only == Some(true) {
        "status"
    } else {
        ""
    };
    let changed = changed_leaves(old, new, status_only);
    if changed.is_empty() {
        return;
    }
    let mut entries: Vec<Value> = new
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut own = BTreeSet::new();
    let mut own_time = None;
    let mut kept = Vec::with_capacity(entries.len() + 1);
    for mut entry in entries.drain(..) {
        let m = entry.get("manager").and_then(Value::as_str).unwrap_or("");
        let sub = entry
            .get("subresource")
            .and_then(Value::as_str)
            .unwrap_or("");
        let op = entry.get("operation").and_then(Value::as_str).unwrap_or("");
        let mut set = BTreeSet::new();
        from_fields_v1(
            entry.get("fieldsV1").unwrap_or(&Value::Null),
            &mut Vec::new(),
            &mut set,
        );
        if m == manager && sub == subresource && op == "Update" {
            own = set;
            own_time = entry.get("time").cloned();
            continue;
        }
        let before = set.len();
        set.retain(|o| !changed.iter().any(|c| overlaps(o, c)));
        if set.is_empty() {
            continue;
        }
        if set.len() != before {
            entry["fieldsV1"] = to_fields_v1(&set);
        }
        kept.push(entry);
    }
    let before = own.clone();
    own.retain(|o| !changed.iter().any(|c| overlaps(o, c)));
    own.extend(changed);
    let time = own_time
        .filter(|_| own == before)
        .unwrap_or_else(|| json!(super::now()));
    let mut entry = json!({
        "manager": manager,
        "operation": "Update",
        "apiVersion": api_version,
        "time": time,
        "fieldsType": "FieldsV1",
        "fieldsV1": to_fields_v1(&own),
    });
    if !subresource.is_empty() {
        entry["subresource"] = json!(subresource);
    }
    kept.push(entry);
    new["metadata"]["managedFields"] = Value::Array(kept);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cm(data: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": data})
    }

    #[test]
    fn an_update_takes_the_fields_it_changes_and_later_applies_conflict_on_them() {
        let base = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}});
        let mut applied = apply(
            &base,
            &cm(json!({"x": "1", "y": "1"})),
            "a",
            false,
            "v1",
            None,
        )
        .expect("apply");
        let old = applied.clone();
        applied["data"]["x"] = json!("2");
        record_update(Some(&old), &mut applied, "kubectl-edit", "v1", None);
        let err = apply(
            &applied,
            &cm(json!({"x": "1", "y": "1"})),
            "a",
            false,
            "v1",
            None,
        )
        .expect_err("conflict");
        assert!(err.message.contains("kubectl-edit"), "{}", err.message);
        assert!(
            apply(
                &applied,
                &cm(json!({"x": "2", "y": "1"})),
                "a",
                false,
                "v1",
                None
            )
            .is_ok()
        );
    }

    #[test]
    fn json_patch_tests_of_missing_paths_against_null_pass() {
        let mut obj = json!({"metadata": {"name": "x", "resourceVersion": "3"}});
        let ops = json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": []},
            {"op": "test", "path": "/metadata/resourceVersion", "value": "3"},
            {"op": "add", "path": "/metadata/finalizers/-", "value": "f"},
        ]);
        json_patch(&mut obj, &ops).expect("patch");
        assert_eq!(obj["metadata"]["finalizers"], json!(["f"]));
    }

    #[test]
    fn strategic_merge_merges_containers_by_name_and_drops_directives() {
        let mut d = json!({"spec": {"containers": [{"name": "a", "image": "x", "args": ["1"]}, {"name": "b", "image": "y"}]}});
        let patch = json!({"spec": {"$setElementOrder/containers": [{"name": "a"}, {"name": "b"}], "containers": [{"name": "a", "image": "z"}, {"name": "b", "$patch": "delete"}]}});
        strategic_merge(&mut d, &patch);
        assert_eq!(
            d,
            json!({"spec": {"containers": [{"name": "a", "image": "z", "args": ["1"]}]}})
        );
    }

    #[test]
    fn apply_removes_what_the_manager_stopped_applying() {
        let base = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}});
        let first = apply(
            &base,
            &cm(json!({"a": "1", "b": "2"})),
            "m",
            false,
            "v1",
            None,
        )
        .expect("apply");
        let second = apply(&first, &cm(json!({"a": "1"})), "m", false, "v1", None).expect("apply");
        assert_eq!(second["data"], json!({"a": "1"}));
    }

    #[test]
    fn apply_removes_a_struct_whose_fields_the_manager_stopped_applying() {
        let base = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}});
        let with = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
            "status": {"phase": "Running", "lastCheckpoint": {"id": 3, "time": "t"}}});
        let without = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
            "status": {"phase": "Running"}});
        let first = apply(&base, &with, "m", false, "v1", Some(true)).expect("apply");
        let second = apply(&first, &without, "m", false, "v1", Some(true)).expect("apply");
        assert_eq!(second["status"], json!({"phase": "Running"}));
    }

    #[test]
    fn apply_conflicts_only_on_a_different_value_and_force_takes_the_field() {
        let base = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}});
        let a = apply(&base, &cm(json!({"x": "1"})), "a", false, "v1", None).expect("apply");
        assert!(apply(&a, &cm(json!({"x": "1"})), "b", false, "v1", None).is_ok());
        let err = apply(&a, &cm(json!({"x": "2"})), "b", false, "v1", None).expect_err("conflict");
        assert_eq!(err.code, 409);
        assert!(
            err.message.contains("conflict with \"a\""),
            "{}",
            err.message
        );
        let forced = apply(&a, &cm(json!({"x": "2"})), "b", true, "v1", None).expect("forced");
        assert_eq!(forced["data"]["x"], "2");
        let managers: Vec<&str> = forced["metadata"]["managedFields"]
            .as_array()
            .expect("managed fields")
            .iter()
            .filter_map(|e| e["manager"].as_str())
            .collect();
        assert_eq!(managers, ["b"], "a lost its only field");
    }

    #[test]
    fn apply_to_the_main_resource_ignores_status_and_to_status_ignores_the_rest() {
        let base = json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "k"}, "status": {"s": 1}});
        let body = json!({"apiVersion": "x/v1", "kind": "K", "spec": {"a": 1}, "status": {"s": 2}});
        let main = apply(&base, &body, "m", false, "x/v1", Some(false)).expect("apply");
        assert_eq!(main["status"]["s"], 1);
        assert_eq!(main["spec"]["a"], 1);
        let status = apply(&base, &body, "m", false, "x/v1", Some(true)).expect("apply");
        assert_eq!(status["status"]["s"], 2);
        assert!(status.get("spec").is_none());
    }
}
