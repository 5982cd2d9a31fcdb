//! The CEL `x-kubernetes-validations` rules of a CRD schema, evaluated with kube-cel the way
//! `apiextensions-apiserver/pkg/apiserver/schema/cel` does: each rule on the value of its node
//! (null values are not validated), transition rules (`oldSelf`) only where the old value can be
//! matched (object fields, items of map lists), `messageExpression`, `fieldPath` and `reason`
//! honoured, and errors worded as the API server words them (`spec: Invalid value: "object":
//! set exactly one of ...`). On an update of the main resource, a rule without `oldSelf` that
//! fails on a value equal to the old one is reported as a warning, not an error (ratcheting).

use std::collections::BTreeMap;

use kube::core::cel::{CompiledSchema, ErrorKind, compile_schema};
use serde_json::Value;

use super::field::{BadValue, ErrorType, FieldError, child, index};

/// The compiled rules of one schema, shaped like the schema but holding only the nodes on the
/// way to a rule.
#[derive(Debug, Default)]
pub(crate) struct RuleTree {
    /// The node's own rules, compiled against the node's schema without its children's rules.
    rules: Option<CompiledSchema>,
    /// That schema, to see `null` fields of objects as absent, as the API server's CEL does.
    schema: Value,
    /// The node's `type` (`object`), the value the API server reports for a failed rule.
    type_name: String,
    properties: BTreeMap<String, RuleTree>,
    items: Option<Box<RuleTree>>,
    additional: Option<Box<RuleTree>>,
    all_of: Vec<RuleTree>,
    /// `x-kubernetes-list-map-keys` of a map list, whose items are matched to their old selves.
    map_keys: Option<Vec<String>>,
    /// `x-kubernetes-map-type: atomic`: fields not matched to their old selves.
    atomic: bool,
}

fn strip_rules(schema: &Value) -> Value {
    match schema {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| k.as_str() != "x-kubernetes-validations")
                .map(|(k, v)| (k.clone(), strip_rules(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(strip_rules).collect()),
        other => other.clone(),
    }
}

impl RuleTree {
    /// Compiles every rule of `schema`; `None` when it has none.
    pub(crate) fn build(schema: &Value) -> Option<RuleTree> {
        let mut tree = RuleTree {
            type_name: schema
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            atomic: schema.get("x-kubernetes-map-type").and_then(Value::as_str) == Some("atomic"),
            ..Default::default()
        };
        if schema.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("map") {
            tree.map_keys = schema
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|k| {
                    k.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                });
        }
        let mut any = false;
        if schema
            .get("x-kubernetes-validations")
            .and_then(Value::as_array)
            .is_some_and(|r| !r.is_empty())
        {
            let mut own = strip_rules(schema);
            if let (Value::Object(own), Some(rules)) =
                (&mut own, schema.get("x-kubernetes-validations"))
            {
                own.insert("x-kubernetes-validations".into(), rules.clone());
            }
            tree.rules = Some(compile_schema(&own));
            tree.schema = own;
            any = true;
        }
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for (name, prop) in props {
                if let Some(sub) = RuleTree::build(prop) {
                    tree.properties.insert(name.clone(), sub);
                    any = true;
                }
            }
        }
        if let Some(sub) = schema.get("items").and_then(RuleTree::build) {
            tree.items = Some(Box::new(sub));
            any = true;
        }
        if let Some(sub) = schema
            .get("additionalProperties")
            .filter(|a| a.is_object())
            .and_then(RuleTree::build)
        {
            tree.additional = Some(Box::new(sub));
            any = true;
        }
        if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
            for branch in all {
                if let Some(sub) = RuleTree::build(branch) {
                    tree.all_of.push(sub);
                    any = true;
                }
            }
        }
        any.then_some(tree)
    }
}

/// What the rules found: errors refuse the object, warnings are sent back.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub(crate) errors: Vec<FieldError>,
    pub(crate) warnings: Vec<String>,
}

/// Evaluates every rule of `tree` on `object` (the whole object), with `old` for transition
/// rules; `ratchet` turns failures on unchanged values into warnings.
pub(crate) fn validate(
    tree: &RuleTree,
    object: &Value,
    old: Option<&Value>,
    ratchet: bool,
) -> Outcome {
    let mut out = Outcome::default();
    let unchanged = ratchet && old.is_some_and(|o| o == object);
    walk(
        tree,
        object,
        old,
        "",
        ratchet && unchanged,
        ratchet,
        &mut out,
    );
    out
}

fn walk(
    tree: &RuleTree,
    value: &Value,
    old: Option<&Value>,
    path: &str,
    unchanged: bool,
    ratchet: bool,
    out: &mut Outcome,
) {
    if value.is_null() {
        return;
    }
    if let Some(rules) = &tree.rules {
        evaluate(tree, rules, value, old, path, unchanged, out);
    }
    for branch in &tree.all_of {
        walk(branch, value, old, path, false, ratchet, out);
    }
    match value {
        Value::Object(map) => {
            let old_of = |k: &str| {
                if tree.atomic {
                    None
                } else {
                    old.and_then(|o| o.get(k))
                }
            };
            let correlated = |k: &str, v: &Value| ratchet && old_of(k).is_some_and(|o| o == v);
            if let Some(add) = &tree.additional {
                for (key, v) in map
                    .iter()
                    .filter(|(k, _)| !tree.properties.contains_key(*k))
                {
                    walk(
                        add,
                        v,
                        old_of(key),
                        &index(path, key),
                        correlated(key, v),
                        ratchet,
                        out,
                    );
                }
            }
            for (key, sub) in &tree.properties {
                if let Some(v) = map.get(key) {
                    walk(
                        sub,
                        v,
                        old_of(key),
                        &child(path, key),
                        correlated(key, v),
                        ratchet,
                        out,
                    );
                }
            }
        }
        Value::Array(items) => {
            if let Some(sub) = &tree.items {
                for (i, item) in items.iter().enumerate() {
                    // Only map lists match items to old items; others keep the list's verdict.
                    let (old_item, same) = match &tree.map_keys {
                        Some(keys) => {
                            let o = old.and_then(Value::as_array).and_then(|o| {
                                o.iter()
                                    .find(|o| keys.iter().all(|k| o.get(k) == item.get(k)))
                            });
                            (o, ratchet && o.is_some_and(|o| o == item))
                        }
                        None => (None, unchanged),
                    };
                    walk(sub, item, old_item, &index(path, i), same, ratchet, out);
                }
            }
        }
        _ => {}
    }
}

/// A rule's `fieldPath` (`.sequence`, `.a['b-c']`) appended to `path`.
fn with_field_path(path: &str, field_path: &str) -> String {
    let mut out = path.to_owned();
    let mut rest = field_path.trim();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            out = child(&out, &r[..end]);
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix("['") {
            let end = r.find("']").unwrap_or(r.len());
            out = child(&out, &r[..end]);
            rest = r.get(end + 2..).unwrap_or("");
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']').unwrap_or(r.len());
            out = index(&out, &r[..end]);
            rest = r.get(end + 1..).unwrap_or("");
        } else {
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            out = child(&out, &rest[..end]);
            rest = &rest[end..];
        }
    }
    out
}

/// `value` with the `null` fields of its objects (those with `properties`, not maps) removed:
/// the API server's CEL treats a null-valued nullable field as an absent one (`has()` is false).
fn nulls_absent(value: &Value, schema: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            Value::Object(
                map.iter()
                    .filter(|(_, v)| props.is_none() || !v.is_null())
                    .map(|(k, v)| {
                        let sub = props.and_then(|p| p.get(k)).or(additional);
                        (
                            k.clone(),
                            sub.map_or_else(|| v.clone(), |s| nulls_absent(v, s)),
                        )
                    })
                    .collect(),
            )
        }
        Value::Array(items) => match schema.get("items") {
            Some(s) => Value::Array(items.iter().map(|v| nulls_absent(v, s)).collect()),
            None => value.clone(),
        },
        other => other.clone(),
    }
}

fn evaluate(
    tree: &RuleTree,
    rules: &CompiledSchema,
    value: &Value,
    old: Option<&Value>,
    path: &str,
    unchanged: bool,
    out: &mut Outcome,
) {
    let value = nulls_absent(value, &tree.schema);
    let old = old.map(|o| nulls_absent(o, &tree.schema));
    let Err(errors) = kube::core::cel::validate_compiled(rules, &value, old.as_ref()) else {
        return;
    };
    let type_value = || BadValue::str(tree.type_name.clone());
    for err in errors.into_vec() {
        let rule = rules
            .validations
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .find(|c| c.rule.rule == err.rule);
        let transition = rule.is_some_and(|r| r.is_transition_rule);
        let rule_string = rule
            .map(|r| {
                r.rule
                    .message
                    .as_deref()
                    .map(str::trim)
                    .filter(|m| !m.is_empty())
                    .unwrap_or(r.rule.rule.trim())
                    .to_owned()
            })
            .unwrap_or_else(|| err.rule.trim().to_owned());
        let field_error = match err.kind {
            ErrorKind::ValidationFailure => {
                let field = match rule.and_then(|r| r.rule.field_path.as_deref()) {
                    Some(fp) => with_field_path(path, fp),
                    None => path.to_owned(),
                };
                let detail = match err.message.strip_prefix("failed rule: ") {
                    Some(_) if rule.is_some_and(|r| r.rule.message.is_none()) => {
                        format!("failed rule: {rule_string}")
                    }
                    _ => err.message.trim().to_owned(),
                };
                match err.reason.as_deref() {
                    Some("FieldValueForbidden") => {
                        FieldError::new(ErrorType::Forbidden, &field, BadValue::str(""), detail)
                    }
                    Some("FieldValueRequired") => FieldError::required(&field, detail),
                    Some("FieldValueDuplicate") => {
                        FieldError::new(ErrorType::Duplicate, &field, type_value(), "")
                    }
                    _ => FieldError::invalid(&field, type_value(), detail),
                }
            }
            ErrorKind::EvaluationError | ErrorKind::UnsupportedReference => {
                let cause = err
                    .message
                    .strip_prefix("rule evaluation error: ")
                    .unwrap_or(&err.message);
                // cel-go words its errors in lower case (`no such key: x`).
                let cause = match cause.strip_prefix("No such key") {
                    Some(rest) => format!("no such key{rest}"),
                    None => cause.to_owned(),
                };
                FieldError::invalid(
                    path,
                    type_value(),
                    format!("{cause} evaluating rule: {rule_string}"),
                )
            }
            _ => FieldError::invalid(
                path,
                type_value(),
                format!("rule compile error: {}", err.message),
            ),
        };
        if unchanged && !transition {
            out.warnings.push(field_error.message());
        } else {
            out.errors.push(field_error);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_paths_are_normalized() {
        assert_eq!(
            with_field_path("spec.source", ".bound.sequence"),
            "spec.source.bound.sequence"
        );
        assert_eq!(with_field_path("spec", ".a['b-c']"), "spec.a.b-c");
        assert_eq!(with_field_path("", ".spec"), "spec");
    }

    #[test]
    fn compiled_rules_can_be_shared_between_threads() {
        fn shared<T: Send + Sync>() {}
        shared::<RuleTree>();
    }
}
