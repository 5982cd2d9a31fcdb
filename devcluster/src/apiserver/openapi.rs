//! A minimal OpenAPI v3 for kubectl: the root index of group-versions and, for each, a
//! document whose PATCH operations declare the `fieldValidation` parameter and the kind they
//! serve. That is what kubectl checks before it lets the server validate fields
//! (`--validate=strict`, its default); without it kubectl wants schemas to validate itself.
//! No schemas are served.

use serde_json::{Map, Value, json};

use super::resources::Registry;

/// `GET /openapi/v3`
pub fn root(registry: &Registry) -> Value {
    let mut paths = Map::new();
    for r in registry.all() {
        let p = if r.group.is_empty() {
            format!("api/{}", r.version)
        } else {
            format!("apis/{}/{}", r.group, r.version)
        };
        paths.insert(
            p.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{p}")}),
        );
    }
    json!({"paths": paths})
}

/// `GET /openapi/v3/api/v1`, `GET /openapi/v3/apis/{group}/{version}`
pub fn group_version(registry: &Registry, group: &str, version: &str) -> Option<Value> {
    let mut paths = Map::new();
    for r in registry
        .all()
        .filter(|r| r.group == group && r.version == version)
    {
        let prefix = if group.is_empty() {
            format!("/api/{version}")
        } else {
            format!("/apis/{group}/{version}")
        };
        let ns = if r.namespaced {
            "/namespaces/{namespace}"
        } else {
            ""
        };
        let gvk = json!({"group": group, "version": version, "kind": r.kind});
        let params: Vec<Value> = ["fieldValidation", "fieldManager", "force", "dryRun"]
            .iter()
            .map(|n| json!({"name": n, "in": "query", "schema": {"type": "string"}}))
            .collect();
        let op = |action: &str| {
            json!({
                "operationId": format!("{action}{}", r.kind),
                "parameters": params,
                "responses": {"200": {"description": "OK"}},
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk,
            })
        };
        paths.insert(
            format!("{prefix}{ns}/{}/{{name}}", r.plural),
            json!({"get": op("get"), "put": op("put"), "patch": op("patch"), "delete": op("delete")}),
        );
        paths.insert(
            format!("{prefix}{ns}/{}", r.plural),
            json!({"get": op("list"), "post": op("post")}),
        );
    }
    if paths.is_empty() {
        return None;
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0"},
        "paths": paths,
        "components": {"schemas": {}},
    }))
}
