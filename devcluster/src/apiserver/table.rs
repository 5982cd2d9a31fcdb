//! `kubectl get` output: the `meta.k8s.io/v1` Table the API server returns when the client
//! asks for `as=Table`. CRDs print their `additionalPrinterColumns`; pods, deployments and
//! namespaces print what kubectl users know; everything else NAME and AGE.

use serde_json::{Value, json};

use super::resources::ResourceInfo;

/// Evaluates the simple JSONPaths of printer columns and scale paths: `.a.b`, `.a[0].b`,
/// `.a[?(@.type=="Ready")].status`. Anything else yields `None`.
pub fn eval<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    let path = path.trim().trim_start_matches('{').trim_end_matches('}');
    let mut cur = obj;
    let mut rest = path.trim_start_matches('.');
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('[') {
            let end = after.find(']')?;
            let inner = &after[..end];
            rest = after[end + 1..].trim_start_matches('.');
            if let Some(filter) = inner.strip_prefix("?(@.").and_then(|f| f.strip_suffix(')')) {
                let (field, value) = filter.split_once("==")?;
                let value = value.trim().trim_matches('"').trim_matches('\'');
                cur = cur.as_array()?.iter().find(|item| {
                    item.get(field.trim())
                        .and_then(|v| v.as_str().map(String::from).or_else(|| Some(v.to_string())))
                        == Some(value.to_string())
                })?;
            } else {
                cur = cur.get(inner.parse::<usize>().ok()?)?;
            }
        } else {
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            cur = cur.get(&rest[..end])?;
            rest = rest[end..].trim_start_matches('.');
        }
    }
    Some(cur)
}

/// The age of a timestamp as kubectl prints it (`5s`, `3m`, `2h`, `4d`).
pub fn age(timestamp: &str) -> String {
    let Ok(t) = timestamp.parse::<jiff::Timestamp>() else {
        return "<unknown>".into();
    };
    let secs = jiff::Timestamp::now().as_second() - t.as_second();
    let secs = secs.max(0);
    if secs < 120 {
        format!("{secs}s")
    } else if secs < 3600 * 2 {
        let (m, s) = (secs / 60, secs % 60);
        if secs < 600 && s > 0 {
            format!("{m}m{s}s")
        } else {
            format!("{m}m")
        }
    } else if secs < 86400 * 2 {
        let (h, m) = (secs / 3600, (secs % 3600) / 60);
        if secs < 3600 * 8 && m > 0 {
            format!("{h}h{m}m")
        } else {
            format!("{h}h")
        }
    } else {
        format!("{}d", secs / 86400)
    }
}

fn col(name: &str, type_: &str, format: &str, priority: i64) -> Value {
    json!({"name": name, "type": type_, "format": format, "description": "", "priority": priority})
}

fn s(obj: &Value, path: &str) -> Value {
    match eval(obj, path) {
        Some(Value::String(s)) => json!(s),
        Some(Value::Null) | None => json!("<none>"),
        Some(v) => v.clone(),
    }
}

fn created(obj: &Value) -> Value {
    json!(
        obj.pointer("/metadata/creationTimestamp")
            .and_then(Value::as_str)
            .map(age)
            .unwrap_or_else(|| "<unknown>".into())
    )
}

fn columns_and_cells(info: &ResourceInfo, objs: &[&Value]) -> (Vec<Value>, Vec<Vec<Value>>) {
    let name = col("Name", "string", "name", 0);
    let age_col = col("Age", "string", "", 0);
    let name_of = |o: &Value| {
        json!(
            o.pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("")
        )
    };
    if info.custom || !info.columns.is_empty() {
        let mut cols = vec![name];
        for c in &info.columns {
            let t = if c.type_ == "date" {
                "string"
            } else {
                c.type_.as_str()
            };
            cols.push(col(&c.name, t, "", c.priority));
        }
        let has_age = info
            .columns
            .iter()
            .any(|c| c.json_path == ".metadata.creationTimestamp");
        if !has_age {
            cols.push(age_col);
        }
        let rows = objs
            .iter()
            .map(|o| {
                let mut cells = vec![name_of(o)];
                for c in &info.columns {
                    let v = eval(o, &c.json_path);
                    cells.push(match (c.type_.as_str(), v) {
                        ("date", Some(Value::String(t))) => json!(age(t)),
                        (_, None | Some(Value::Null)) => Value::Null,
                        (_, Some(v)) => v.clone(),
                    });
                }
                if !has_age {
                    cells.push(created(o));
                }
                cells
            })
            .collect();
        return (cols, rows);
    }
    match (info.group.as_str(), info.plural.as_str()) {
        ("", "pods") => {
            let cols = vec![
                name,
                col("Ready", "string", "", 0),
                col("Status", "string", "", 0),
                col("Restarts", "string", "", 0),
                age_col,
                col("IP", "string", "", 1),
                col("Node", "string", "", 1),
            ];
            let rows = objs
                .iter()
                .map(|o| {
                    let total = o
                        .pointer("/spec/containers")
                        .and_then(Value::as_array)
                        .map(Vec::len)
                        .unwrap_or(0);
                    let statuses = o
                        .pointer("/status/containerStatuses")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default();
                    let ready = statuses
                        .iter()
                        .filter(|c| c.get("ready").and_then(Value::as_bool) == Some(true))
                        .count();
                    let restarts: i64 = statuses
                        .iter()
                        .filter_map(|c| c.get("restartCount").and_then(Value::as_i64))
                        .sum();
                    let status = if o.pointer("/metadata/deletionTimestamp").is_some() {
                        "Terminating".to_string()
                    } else {
                        o.pointer("/status/phase")
                            .and_then(Value::as_str)
                            .unwrap_or("Pending")
                            .to_string()
                    };
                    vec![
                        name_of(o),
                        json!(format!("{ready}/{total}")),
                        json!(status),
                        json!(restarts.to_string()),
                        created(o),
                        s(o, ".status.podIP"),
                        s(o, ".spec.nodeName"),
                    ]
                })
                .collect();
            (cols, rows)
        }
        ("apps", "deployments") => {
            let cols = vec![
                name,
                col("Ready", "string", "", 0),
                col("Up-to-date", "integer", "", 0),
                col("Available", "integer", "", 0),
                age_col,
            ];
            let rows = objs
                .iter()
                .map(|o| {
                    let n = |p: &str| o.pointer(p).and_then(Value::as_i64).unwrap_or(0);
                    let want = o
                        .pointer("/spec/replicas")
                        .and_then(Value::as_i64)
                        .unwrap_or(1);
                    vec![
                        name_of(o),
                        json!(format!("{}/{want}", n("/status/readyReplicas"))),
                        json!(n("/status/updatedReplicas")),
                        json!(n("/status/availableReplicas")),
                        created(o),
                    ]
                })
                .collect();
            (cols, rows)
        }
        ("", "namespaces") => {
            let cols = vec![name, col("Status", "string", "", 0), age_col];
            let rows = objs
                .iter()
                .map(|o| vec![name_of(o), s(o, ".status.phase"), created(o)])
                .collect();
            (cols, rows)
        }
        _ => {
            let cols = vec![name, age_col];
            let rows = objs.iter().map(|o| vec![name_of(o), created(o)]).collect();
            (cols, rows)
        }
    }
}

fn row_object(obj: &Value, include: &str) -> Value {
    match include {
        "None" => Value::Null,
        "Object" => obj.clone(),
        _ => {
            json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj.get("metadata").cloned().unwrap_or(json!({}))})
        }
    }
}

/// The Table of `objs`; `include` is `includeObject` (`None`, `Metadata` (default), `Object`).
pub fn table(info: &ResourceInfo, objs: &[&Value], include: &str, list_meta: Value) -> Value {
    let (cols, rows) = columns_and_cells(info, objs);
    let rows: Vec<Value> = rows
        .into_iter()
        .zip(objs)
        .map(|(cells, o)| json!({"cells": cells, "object": row_object(o, include)}))
        .collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta, "columnDefinitions": cols, "rows": rows})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eval_follows_fields_indexes_and_filters() {
        let obj = json!({"status": {"conditions": [{"type": "Other", "status": "False"}, {"type": "Ready", "status": "True"}]}, "spec": {"n": 3}});
        assert_eq!(eval(&obj, ".spec.n"), Some(&json!(3)));
        assert_eq!(
            eval(&obj, ".status.conditions[0].type"),
            Some(&json!("Other"))
        );
        assert_eq!(
            eval(&obj, ".status.conditions[?(@.type==\"Ready\")].status"),
            Some(&json!("True"))
        );
        assert_eq!(eval(&obj, ".status.missing"), None);
    }

    #[test]
    fn age_reads_like_kubectl() {
        let ago =
            |s: i64| (jiff::Timestamp::now() - jiff::SignedDuration::from_secs(s)).to_string();
        assert_eq!(age(&ago(5)), "5s");
        assert_eq!(age(&ago(185)), "3m5s");
        assert_eq!(age(&ago(3 * 3600)), "3h");
        assert_eq!(age(&ago(3 * 86400)), "3d");
    }
}
