//! Unknown fields of a manifest, found as `kubectl apply --validate=strict` finds them: the
//! document walked against its CRD's OpenAPI schema (the one `crdgen` writes), so that a field
//! the schema does not declare is an error, and nothing under
//! `x-kubernetes-preserve-unknown-fields` is. `metadata` is checked against the fields of
//! ObjectMeta, as the API server's strict decoding does. Each unknown field is named by its
//! path, with the nearest known field when one is close (a misspelling).

use std::sync::OnceLock;

use kube::CustomResourceExt;
use serde_json::Value;

/// An undeclared field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownField {
    /// Its path, `spec.source.jetstream.filterSubject`, `spec.steps[0].mapp`.
    pub path: String,
    /// The known field at the same place whose name is nearest, when one is close.
    pub nearest: Option<String>,
}

impl std::fmt::Display for UnknownField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: unknown field", self.path)?;
        if let Some(n) = &self.nearest {
            write!(f, "; did you mean {n}?")?;
        }
        Ok(())
    }
}

/// The fields of ObjectMeta, which a CRD's schema leaves to the API server.
const OBJECT_META: [&str; 15] = [
    "annotations",
    "creationTimestamp",
    "deletionGracePeriodSeconds",
    "deletionTimestamp",
    "finalizers",
    "generateName",
    "generation",
    "labels",
    "managedFields",
    "name",
    "namespace",
    "ownerReferences",
    "resourceVersion",
    "selfLink",
    "uid",
];

/// The OpenAPI schema of a jetflow kind (`Pipeline`, `Stream`), `None` for another kind.
fn schema(kind: &str) -> Option<&'static Value> {
    static PIPELINE: OnceLock<Value> = OnceLock::new();
    static STREAM: OnceLock<Value> = OnceLock::new();
    let of = |crd: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition| {
        crd.spec.versions[0]
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .and_then(|s| serde_json::to_value(s).ok())
            .unwrap_or(Value::Null)
    };
    match kind {
        "Pipeline" => Some(PIPELINE.get_or_init(|| of(crate::Pipeline::crd()))),
        "Stream" => Some(STREAM.get_or_init(|| of(crate::Stream::crd()))),
        _ => None,
    }
}

/// The fields of `document`, a resource of `kind`, that its schema does not declare, in the
/// order they appear.
pub fn unknown(kind: &str, document: &Value) -> Vec<UnknownField> {
    let mut found = Vec::new();
    let Some(schema) = schema(kind) else {
        return found;
    };
    let Some(fields) = document.as_object() else {
        return found;
    };
    for (key, value) in fields {
        match key.as_str() {
            "apiVersion" | "kind" => {}
            "metadata" => {
                for field in value.as_object().into_iter().flat_map(|m| m.keys()) {
                    if !OBJECT_META.contains(&field.as_str()) {
                        found.push(UnknownField {
                            path: format!("metadata.{field}"),
                            nearest: nearest(field, OBJECT_META.iter().copied()),
                        });
                    }
                }
            }
            _ => walk(
                value,
                schema,
                key,
                key,
                &["apiVersion", "kind", "metadata"],
                &mut found,
            ),
        }
    }
    found.sort_by(|a, b| a.path.cmp(&b.path));
    found
}

/// Checks `value`, field `key` (at `path`) of an object whose schema is `parent`; `extra` are
/// fields known there besides the schema's.
fn walk(
    value: &Value,
    parent: &Value,
    key: &str,
    path: &str,
    extra: &[&str],
    found: &mut Vec<UnknownField>,
) {
    match parent.get("properties").and_then(|p| p.get(key)) {
        Some(schema) => check(value, schema, path, found),
        None => {
            let known = parent
                .get("properties")
                .and_then(Value::as_object)
                .into_iter()
                .flat_map(|p| p.keys().map(String::as_str))
                .chain(extra.iter().copied());
            found.push(UnknownField {
                path: path.to_owned(),
                nearest: nearest(key, known),
            });
        }
    }
}

/// Checks `value` against its own `schema`.
fn check(value: &Value, schema: &Value, path: &str, found: &mut Vec<UnknownField>) {
    if schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true)
    {
        return;
    }
    match value {
        Value::Object(fields) => {
            let additional = schema.get("additionalProperties");
            for (key, child) in fields {
                let child_path = format!("{path}.{key}");
                let declared = schema.get("properties").and_then(|p| p.get(key.as_str()));
                match (declared, additional) {
                    (Some(s), _) => check(child, s, &child_path, found),
                    (None, Some(Value::Bool(true))) => {}
                    (None, Some(s @ Value::Object(_))) => check(child, s, &child_path, found),
                    // An object with neither properties nor additionalProperties takes
                    // anything only with preserve-unknown-fields (handled above); a schema
                    // without `type: object` says nothing of fields.
                    (None, _) if schema.get("properties").is_none() => {}
                    (None, _) => walk(child, schema, key, &child_path, &[], found),
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    check(item, s, &format!("{path}[{i}]"), found);
                }
            }
        }
        _ => {}
    }
}

/// The candidate nearest to `name` when it is close enough to be a misspelling of it.
fn nearest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<String> {
    let lower = name.to_lowercase();
    candidates
        .map(|c| (distance(&lower, &c.to_lowercase()), c))
        .filter(|(d, c)| *d <= 2.max(c.len().min(name.len()) / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.to_owned())
}

/// Edit distance with adjacent transpositions counted as one edit (`checkpiont`).
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn misspelt_fields_are_found_with_the_nearest_known_one() {
        let doc = json!({
            "apiVersion": "jetflow.io/v1alpha1", "kind": "Pipeline",
            "metadata": {"name": "typo", "lables": {}},
            "spec": {
                "source": {"jetstream": {"stream": "ORDERS", "filterSubject": "orders.eu.>"}},
                "steps": [{"map": "."}, {"mapp": "."}],
                "sink": {"jetstream": {"stream": "COPY", "subject": "copy.{{subject}}"}},
                "checkpiont": {"interval": "1s"},
                "worker": {"resources": {"limits": {"memory": "1Gi"}}, "nodeSelector": {"a": "b"}},
            },
        });
        let found: Vec<String> = unknown("Pipeline", &doc)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            found,
            vec![
                "metadata.lables: unknown field; did you mean labels?",
                "spec.checkpiont: unknown field; did you mean checkpoint?",
                "spec.source.jetstream.filterSubject: unknown field; did you mean filterSubjects?",
                "spec.steps[1].mapp: unknown field; did you mean map?",
            ]
        );
    }

    #[test]
    fn a_field_far_from_every_known_one_has_no_suggestion() {
        let doc = json!({"kind": "Stream", "spec": {"subjects": ["a"], "zzzzzzzz": 1}});
        assert_eq!(
            unknown("Stream", &doc),
            vec![UnknownField {
                path: "spec.zzzzzzzz".into(),
                nearest: None
            }]
        );
    }

    #[test]
    fn distances() {
        assert_eq!(distance("checkpiont", "checkpoint"), 1);
        assert_eq!(distance("filtersubject", "filtersubjects"), 1);
        assert_eq!(distance("abc", "abc"), 0);
    }
}
