//! What the API server does to a custom resource while decoding it, before validation
//! (`apiextensions-apiserver/pkg/apiserver/schema/{pruning,defaulting}`): unknown fields pruned
//! (their paths reported), `null`s of non-nullable fields without a default dropped, then the
//! schema's `default`s filled in. All three walk the structural schema as JSON.

use serde_json::{Map, Value};

const META_FIELDS: [&str; 3] = ["apiVersion", "kind", "metadata"];

fn flag(schema: &Value, key: &str) -> bool {
    schema.get(key).and_then(Value::as_bool) == Some(true)
}

fn property<'a>(schema: &'a Value, key: &str) -> Option<&'a Value> {
    schema.get("properties").and_then(|p| p.get(key))
}

/// The schema of map values (`additionalProperties` as a schema), if any.
fn additional(schema: &Value) -> Option<&Value> {
    schema.get("additionalProperties").filter(|a| a.is_object())
}

/// Removes every field the schema does not declare, returning their paths sorted
/// (`spec.foo`, `spec.steps[0].bar`), as `pruning.PruneWithOptions` does for a resource root.
pub(crate) fn prune(object: &mut Value, schema: &Value) -> Vec<String> {
    let mut unknown = Vec::new();
    prune_at(object, Some(schema), true, "", &mut unknown);
    unknown.sort();
    unknown
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

fn prune_at(
    x: &mut Value,
    schema: Option<&Value>,
    embedded: bool,
    path: &str,
    unknown: &mut Vec<String>,
) {
    if let Some(s) = schema
        && flag(s, "x-kubernetes-preserve-unknown-fields")
    {
        skip_prune(x, s, embedded, path, unknown);
        return;
    }
    match x {
        Value::Object(map) => {
            let Some(s) = schema else {
                for key in map.keys() {
                    unknown.push(join(path, key));
                }
                map.clear();
                return;
            };
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                if embedded && META_FIELDS.contains(&key.as_str()) {
                    continue;
                }
                let child_path = join(path, &key);
                if let Some(prop) = property(s, &key) {
                    if let Some(v) = map.get_mut(&key) {
                        prune_at(
                            v,
                            Some(prop),
                            flag(prop, "x-kubernetes-embedded-resource"),
                            &child_path,
                            unknown,
                        );
                    }
                } else if let Some(add) = s.get("additionalProperties").filter(|a| !a.is_boolean())
                {
                    if let Some(v) = map.get_mut(&key) {
                        prune_at(
                            v,
                            Some(add),
                            flag(add, "x-kubernetes-embedded-resource"),
                            &child_path,
                            unknown,
                        );
                    }
                } else if s.get("additionalProperties").and_then(Value::as_bool) == Some(true) {
                    // Anything goes (not structural, but not ours to refuse).
                } else {
                    if !META_FIELDS.contains(&key.as_str()) || !path.is_empty() {
                        unknown.push(child_path);
                    }
                    map.remove(&key);
                }
            }
        }
        Value::Array(items) => {
            let item_schema = schema.and_then(|s| s.get("items"));
            for (i, v) in items.iter_mut().enumerate() {
                let embedded =
                    item_schema.is_some_and(|s| flag(s, "x-kubernetes-embedded-resource"));
                prune_at(v, item_schema, embedded, &format!("{path}[{i}]"), unknown);
            }
        }
        _ => {}
    }
}

fn skip_prune(x: &mut Value, s: &Value, embedded: bool, path: &str, unknown: &mut Vec<String>) {
    match x {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if embedded && META_FIELDS.contains(&key.as_str()) {
                    continue;
                }
                let child_path = join(path, key);
                if let Some(prop) = property(s, key) {
                    prune_at(
                        v,
                        Some(prop),
                        flag(prop, "x-kubernetes-embedded-resource"),
                        &child_path,
                        unknown,
                    );
                } else if let Some(add) = additional(s) {
                    prune_at(
                        v,
                        Some(add),
                        flag(add, "x-kubernetes-embedded-resource"),
                        &child_path,
                        unknown,
                    );
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = s.get("items") {
                for (i, v) in items.iter_mut().enumerate() {
                    let embedded = flag(item_schema, "x-kubernetes-embedded-resource");
                    skip_prune(v, item_schema, embedded, &format!("{path}[{i}]"), unknown);
                }
            }
        }
        _ => {}
    }
}

fn field_schema<'a>(key: &str, schema: Option<&'a Value>) -> Option<&'a Value> {
    let s = schema?;
    property(s, key).or_else(|| additional(s))
}

fn nullable(schema: &Value) -> bool {
    flag(schema, "nullable")
}

/// Drops `null` fields whose schema is neither nullable nor defaulted
/// (`defaulting.PruneNonNullableNullsWithoutDefaults`).
pub(crate) fn prune_nulls(x: &mut Value, schema: Option<&Value>) {
    match x {
        Value::Object(map) => {
            map.retain(|key, v| {
                let s = field_schema(key, schema);
                !(v.is_null() && s.is_some_and(|s| !nullable(s) && s.get("default").is_none()))
            });
            for (key, v) in map.iter_mut() {
                prune_nulls(v, field_schema(key, schema));
            }
        }
        Value::Array(items) => {
            let item_schema = schema.and_then(|s| s.get("items"));
            for v in items {
                prune_nulls(v, item_schema);
            }
        }
        _ => {}
    }
}

fn non_nullable_null(x: &Value, schema: Option<&Value>) -> bool {
    x.is_null() && schema.is_some_and(|s| !nullable(s))
}

/// Fills in the schema's defaults (`defaulting.Default`): a missing field, or a `null` one that
/// may not be null, gets its property's default; defaults are themselves defaulted further down.
pub(crate) fn default(x: &mut Value, schema: &Value) {
    match x {
        Value::Object(map) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (key, prop) in props {
                    let Some(default) = prop.get("default").filter(|d| !d.is_null()) else {
                        continue;
                    };
                    let missing = map
                        .get(key)
                        .is_none_or(|v| non_nullable_null(v, Some(prop)));
                    if missing {
                        map.insert(key.clone(), default.clone());
                    }
                }
            }
            default_children(map, schema);
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for v in items {
                    if non_nullable_null(v, Some(item_schema)) {
                        *v = item_schema.get("default").cloned().unwrap_or(Value::Null);
                    }
                    default(v, item_schema);
                }
            }
        }
        _ => {}
    }
}

fn default_children(map: &mut Map<String, Value>, schema: &Value) {
    for (key, v) in map.iter_mut() {
        if let Some(prop) = property(schema, key) {
            default(v, prop);
        } else if let Some(add) = additional(schema) {
            if non_nullable_null(v, Some(add)) {
                *v = add.get("default").cloned().unwrap_or(Value::Null);
            }
            default(v, add);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "spec": {"type": "object", "properties": {
                "a": {"type": "integer", "default": 1},
                "b": {"type": "object", "default": {}, "properties": {"c": {"type": "string", "default": "x"}}},
                "list": {"type": "array", "items": {"type": "object", "properties": {"n": {"type": "string"}}}},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                "n": {"type": "string", "nullable": true},
                "m": {"type": "string"}
            }}
        }})
    }

    #[test]
    fn unknown_fields_are_pruned_with_their_paths() {
        let mut obj = json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "a"},
            "spec": {"foo": 1, "list": [{"n": "a", "bar": 2}], "free": {"anything": true}}, "extra": 1});
        let unknown = prune(&mut obj, &schema());
        assert_eq!(unknown, vec!["extra", "spec.foo", "spec.list[0].bar"]);
        assert_eq!(
            obj,
            json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "a"},
            "spec": {"list": [{"n": "a"}], "free": {"anything": true}}})
        );
    }

    #[test]
    fn defaults_fill_missing_and_null_fields_and_recurse_into_defaults() {
        let mut obj = json!({"spec": {"a": null, "n": null, "m": null}});
        prune_nulls(&mut obj, Some(&schema()));
        default(&mut obj, &schema());
        assert_eq!(obj, json!({"spec": {"a": 1, "b": {"c": "x"}, "n": null}}));
    }
}
