//! The HTTP face: parses each request's path into a resource, authenticates and authorizes it,
//! and dispatches it to discovery, reads, watches, writes and the subresources (status,
//! scale, token, log). Every failure is answered with a `Status` object. Each request is
//! logged at debug level.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Request, State as AxumState};
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode, header};
use serde_json::{Value, json};

use super::auth;
use super::ops::{self, DeleteOptions, PatchKind, WriteOptions};
use super::resources::ResourceInfo;
use super::selector::{Filter, selector_string};
use super::state::Shared;
use super::status::{ApiError, success};
use super::table;
use super::watch::{self, WatchParams};
use crate::rbac::{Attributes, UserInfo};

/// A resource request's target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Group, empty for core.
    pub group: String,
    /// Version.
    pub version: String,
    /// Namespace from the path.
    pub namespace: Option<String>,
    /// Plural resource.
    pub plural: String,
    /// Object name.
    pub name: Option<String>,
    /// Subresource.
    pub sub: Option<String>,
}

/// Parses `/api/v1/...` and `/apis/g/v/...` paths that name a resource.
pub fn parse_path(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let (group, version, mut rest) = match segs.first() {
        Some(&"api") if segs.len() >= 3 => ("", segs[1], &segs[2..]),
        Some(&"apis") if segs.len() >= 4 => (segs[1], segs[2], &segs[3..]),
        _ => return None,
    };
    let mut namespace = None;
    if rest[0] == "namespaces"
        && rest.len() >= 3
        && !(rest.len() == 3 && ["status", "finalize"].contains(&rest[2]))
    {
        namespace = Some(rest[1].to_string());
        rest = &rest[2..];
    }
    if rest.len() > 3 {
        return None;
    }
    Some(Target {
        group: group.into(),
        version: version.into(),
        namespace,
        plural: rest[0].into(),
        name: rest.get(1).map(|s| s.to_string()),
        sub: rest.get(2).map(|s| s.to_string()),
    })
}

type Query = HashMap<String, String>;

fn json_response(code: StatusCode, value: &Value) -> Response {
    let mut r = Response::new(Body::from(serde_json::to_vec(value).unwrap_or_default()));
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn with_content_type(mut r: Response, ct: &'static str) -> Response {
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    r
}

fn error_response(e: &ApiError) -> Response {
    json_response(e.status_code(), &e.to_status())
}

fn with_warnings(mut r: Response, warnings: &[String]) -> Response {
    for w in warnings {
        let text = format!("299 - \"{}\"", w.replace('"', "'"));
        if let Ok(v) = HeaderValue::from_str(&text) {
            r.headers_mut().append(header::WARNING, v);
        }
    }
    r
}

/// Serves one request.
pub async fn handle(AxumState(state): AxumState<Shared>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let (response, user) = serve(&state, req).await;
    tracing::debug!(%method, %path, user = user.as_deref().unwrap_or("-"), status = response.status().as_u16(), "request");
    response
}

async fn serve(state: &Shared, req: Request) -> (Response, Option<String>) {
    let path = req.uri().path().to_string();
    match path.as_str() {
        "/healthz" | "/livez" | "/readyz" => return (Response::new(Body::from("ok")), None),
        "/version" => {
            let v = json!({"major": "1", "minor": "32", "gitVersion": "v1.32.0-jetflow-devcluster", "gitCommit": "", "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.23", "compiler": "gc", "platform": "linux/amd64"});
            return (json_response(StatusCode::OK, &v), None);
        }
        _ => {}
    }
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok());
    let user = match auth::authenticate(state, header) {
        Ok(u) => u,
        Err(e) => return (error_response(&e), None),
    };
    let name = user.name.clone();
    let response = match route(state, &user, req).await {
        Ok(r) => r,
        Err(e) => error_response(&e),
    };
    (response, Some(name))
}

fn accept(req: &Request) -> String {
    req.headers()
        .get(header::ACCEPT)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_string()
}

fn discovery(state: &Shared, path: &str, accept: &str) -> Result<Response, ApiError> {
    let registry = state.registry();
    let aggregated = accept.contains("as=APIGroupDiscoveryList") && accept.contains("v=v2");
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let ct_aggregated = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
    let value = match segs.as_slice() {
        ["api"] if aggregated => {
            return Ok(with_content_type(
                json_response(StatusCode::OK, &registry.aggregated(true)),
                ct_aggregated,
            ));
        }
        ["apis"] if aggregated => {
            return Ok(with_content_type(
                json_response(StatusCode::OK, &registry.aggregated(false)),
                ct_aggregated,
            ));
        }
        ["api"] => registry.api_versions(),
        ["apis"] => registry.api_group_list(),
        ["api", v] => registry
            .api_resource_list("", v)
            .ok_or_else(ApiError::no_route)?,
        ["apis", g] => registry.api_group(g).ok_or_else(ApiError::no_route)?,
        ["apis", g, v] => registry
            .api_resource_list(g, v)
            .ok_or_else(ApiError::no_route)?,
        ["openapi", "v3"] => super::openapi::root(&registry),
        ["openapi", "v3", "api", v] => {
            super::openapi::group_version(&registry, "", v).ok_or_else(ApiError::no_route)?
        }
        ["openapi", "v3", "apis", g, v] => {
            super::openapi::group_version(&registry, g, v).ok_or_else(ApiError::no_route)?
        }
        _ => return Err(ApiError::no_route()),
    };
    Ok(json_response(StatusCode::OK, &value))
}

/// The single name a field selector of only `metadata.name=x` pins.
fn pinned_name(query: &Query) -> Option<String> {
    let selector = query.get("fieldSelector")?;
    let name = selector
        .strip_prefix("metadata.name==")
        .or_else(|| selector.strip_prefix("metadata.name="))?;
    (!name.contains(',')).then(|| name.to_string())
}

fn verb_of(method: &Method, target: &Target, query: &Query) -> &'static str {
    let watching = query.get("watch").is_some_and(|w| w == "true" || w == "1");
    match (method.as_str(), target.name.is_some()) {
        ("GET", _) if watching => "watch",
        ("GET", true) => "get",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => "",
    }
}

async fn read_body(req: Request) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(req.into_body(), 64 * 1024 * 1024)
        .await
        .map_err(|e| ApiError::bad_request(format!("reading the body failed: {e}")))
}

fn parse_body(bytes: &[u8]) -> Result<Value, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(bytes)
        .or_else(|_| serde_yaml_ng::from_slice::<Value>(bytes))
        .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON or YAML: {e}")))
}

fn write_options(query: &Query, user_agent: &str) -> WriteOptions {
    WriteOptions {
        default_manager: user_agent
            .split('/')
            .next()
            .filter(|m| !m.is_empty())
            .unwrap_or("unknown")
            .to_string(),
        applying: false,
        manager: query.get("fieldManager").cloned(),
        force: query
            .get("force")
            .is_some_and(|f| f == "true" || f.is_empty()),
        strict: query.get("fieldValidation").is_some_and(|v| v == "Strict"),
        dry_run: query.contains_key("dryRun"),
    }
}

async fn route(state: &Shared, user: &UserInfo, req: Request) -> Result<Response, ApiError> {
    let path = req.uri().path().to_string();
    let query: Query = req
        .uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let accept = accept(&req);
    let user_agent = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_string();
    let Some(target) = parse_path(&path) else {
        if req.method() != Method::GET {
            return Err(ApiError::method_not_allowed());
        }
        return discovery(state, &path, &accept);
    };
    let Some(info) = state.resource(&target.group, &target.version, &target.plural) else {
        if target.name.is_none() && target.namespace.is_none() && req.method() == Method::GET {
            // `/apis/g/v/x` where x is no resource: discovery gives the 404.
            return Err(ApiError::no_route());
        }
        return Err(ApiError::no_route());
    };
    if target.namespace.is_some() && !info.namespaced {
        return Err(ApiError::no_route());
    }
    let method = req.method().clone();
    let verb = verb_of(&method, &target, &query);
    if verb.is_empty() {
        return Err(ApiError::method_not_allowed());
    }
    let attributes = Attributes {
        verb: verb.into(),
        api_group: info.group.clone(),
        resource: info.plural.clone(),
        subresource: target.sub.clone().unwrap_or_default(),
        // As the API server's RequestInfo: a namespace object is in its own namespace.
        namespace: match (
            &target.namespace,
            info.group.is_empty() && info.plural == "namespaces",
        ) {
            (Some(ns), _) => ns.clone(),
            (None, true) => target.name.clone().unwrap_or_default(),
            (None, false) => String::new(),
        },
        // A list or watch pinned to one name by `metadata.name=` is authorized for that name.
        name: target
            .name
            .clone()
            .unwrap_or_else(|| pinned_name(&query).unwrap_or_default()),
    };
    auth::authorize(state, user, &attributes)?;
    let ns = target.namespace.clone().unwrap_or_default();
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    let sub = target.sub.as_deref();
    let protobuf = content_type.contains("protobuf");
    let create = method == Method::POST && target.name.is_none();
    if protobuf
        && sub != Some("token")
        && !create
        && [Method::PUT, Method::PATCH, Method::POST].contains(&method)
    {
        return Err(ApiError::unsupported_media(&content_type));
    }
    if let Some(s) = sub {
        let known = match s {
            "status" => info.status,
            "scale" => info.scale.is_some(),
            other => info.extra_subresources.contains(&other),
        };
        if !known {
            return Err(ApiError::no_route());
        }
    }
    match (method.as_str(), target.name.as_deref()) {
        ("GET", None) => list_or_watch(state, &info, target.namespace.clone(), &query, &accept),
        ("GET", Some(name)) => match sub {
            Some("scale") => Ok(json_response(
                StatusCode::OK,
                &scale_of(&info, &get(state, &info, &ns, name)?),
            )),
            Some("log") => super::logs::logs(state, &ns, name, &query).await,
            _ => {
                let obj = get(state, &info, &ns, name)?;
                Ok(render_one(&info, &obj, &accept, &query))
            }
        },
        ("POST", None) => {
            let bytes = read_body(req).await?;
            if info.plural == "selfsubjectreviews" {
                let review = json!({
                    "apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview",
                    "metadata": {"creationTimestamp": ops::now()},
                    "status": {"userInfo": {"username": user.name, "groups": user.groups}},
                });
                return Ok(json_response(StatusCode::CREATED, &review));
            }
            let body = if protobuf {
                // `kubectl create namespace|configmap|secret|serviceaccount` send protobuf.
                super::protobuf::decode(&bytes)
                    .ok_or_else(|| ApiError::unsupported_media(&content_type))?
            } else {
                parse_body(&bytes)?
            };
            if info.plural == "selfsubjectaccessreviews" {
                return Ok(json_response(
                    StatusCode::CREATED,
                    &self_review(state, user, body),
                ));
            }
            if info.group == "rbac.authorization.k8s.io" {
                auth::may_grant(state, user, &body)?;
            }
            let (obj, warnings) =
                ops::create(state, &info, &ns, body, &write_options(&query, &user_agent))?;
            Ok(with_warnings(
                json_response(StatusCode::CREATED, &obj),
                &warnings,
            ))
        }
        ("POST", Some(name)) if sub == Some("token") => {
            // kubectl sends its TokenRequest as protobuf; every field of it is optional.
            let bytes = read_body(req).await?;
            if info.plural == "selfsubjectreviews" {
                let review = json!({
                    "apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview",
                    "metadata": {"creationTimestamp": ops::now()},
                    "status": {"userInfo": {"username": user.name, "groups": user.groups}},
                });
                return Ok(json_response(StatusCode::CREATED, &review));
            }
            let body = if protobuf {
                json!({})
            } else {
                parse_body(&bytes)?
            };
            token_request(state, &ns, name, body)
        }
        ("PUT", Some(name)) => {
            let body = parse_body(&read_body(req).await?)?;
            if info.group == "rbac.authorization.k8s.io" {
                auth::may_grant(state, user, &body)?;
            }
            let opts = write_options(&query, &user_agent);
            if sub == Some("scale") {
                return write_scale(state, &info, &ns, name, &opts, |_| Ok(body.clone()));
            }
            let (obj, warnings) = ops::replace(state, &info, &ns, name, sub, body, &opts)?;
            Ok(with_warnings(
                json_response(StatusCode::OK, &obj),
                &warnings,
            ))
        }
        ("PATCH", Some(name)) => {
            let kind = if content_type.contains("json-patch") {
                PatchKind::Json
            } else if content_type.contains("strategic-merge-patch") {
                PatchKind::Strategic
            } else if content_type.contains("merge-patch") {
                PatchKind::Merge
            } else if content_type.contains("apply-patch") {
                PatchKind::Apply
            } else {
                return Err(ApiError::unsupported_media(&content_type));
            };
            let body = parse_body(&read_body(req).await?)?;
            if info.group == "rbac.authorization.k8s.io" && kind == PatchKind::Apply {
                auth::may_grant(state, user, &body)?;
            }
            let opts = write_options(&query, &user_agent);
            if sub == Some("scale") {
                return write_scale(state, &info, &ns, name, &opts, |scale| {
                    let mut s = scale.clone();
                    match kind {
                        PatchKind::Json => super::patch::json_patch(&mut s, &body)?,
                        _ => super::patch::merge(&mut s, &body),
                    }
                    Ok(s)
                });
            }
            let (obj, warnings) = ops::patch(state, &info, &ns, name, sub, kind, body, &opts)?;
            Ok(with_warnings(
                json_response(StatusCode::OK, &obj),
                &warnings,
            ))
        }
        ("DELETE", Some(name)) => {
            let body = parse_body(&read_body(req).await?)?;
            let opts = delete_options(&query, &body);
            if query.contains_key("dryRun") || body.get("dryRun").is_some_and(|d| !d.is_null()) {
                return Ok(json_response(
                    StatusCode::OK,
                    &get(state, &info, &ns, name)?,
                ));
            }
            let obj = ops::delete(state, &info, &ns, name, &opts)?;
            Ok(json_response(StatusCode::OK, &obj))
        }
        ("DELETE", None) => {
            let body = parse_body(&read_body(req).await?)?;
            let opts = delete_options(&query, &body);
            let filter = Filter::parse(
                query.get("labelSelector").map(String::as_str),
                query.get("fieldSelector").map(String::as_str),
            )?;
            let (items, _) =
                state
                    .store
                    .list(&info.group, &info.plural, target.namespace.as_deref());
            for obj in items.iter().filter(|o| filter.matches(o)) {
                let name = obj
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                match ops::delete(state, &info, &ns, name, &opts) {
                    Ok(_) => {}
                    Err(e) if e.code == 404 => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(json_response(
                StatusCode::OK,
                &success(&info.group, &info.plural, "", ""),
            ))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

fn get(state: &Shared, info: &ResourceInfo, ns: &str, name: &str) -> Result<Value, ApiError> {
    state
        .store
        .get(&ops::key(info, ns, name))
        .ok_or_else(|| ApiError::not_found(&info.group, &info.plural, name))
}

fn wants_table(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table"))
}

fn include_object(query: &Query) -> String {
    query
        .get("includeObject")
        .cloned()
        .unwrap_or_else(|| "Metadata".into())
}

fn partial(obj: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj.get("metadata").cloned().unwrap_or(json!({}))})
}

fn render_one(info: &ResourceInfo, obj: &Value, accept: &str, query: &Query) -> Response {
    if wants_table(accept) {
        let t = table::table(
            info,
            &[obj],
            &include_object(query),
            json!({"resourceVersion": obj.pointer("/metadata/resourceVersion")}),
        );
        return with_content_type(
            json_response(StatusCode::OK, &t),
            "application/json;as=Table;v=v1;g=meta.k8s.io",
        );
    }
    if accept
        .split(',')
        .next()
        .is_some_and(|a| a.contains("as=PartialObjectMetadata"))
    {
        return json_response(StatusCode::OK, &partial(obj));
    }
    json_response(StatusCode::OK, obj)
}

fn list_or_watch(
    state: &Shared,
    info: &ResourceInfo,
    namespace: Option<String>,
    query: &Query,
    accept: &str,
) -> Result<Response, ApiError> {
    let filter = Filter::parse(
        query.get("labelSelector").map(String::as_str),
        query.get("fieldSelector").map(String::as_str),
    )?;
    let watching = query.get("watch").is_some_and(|w| w == "true" || w == "1");
    if watching {
        let params = WatchParams {
            rv: query.get("resourceVersion").cloned(),
            initial_events: query.get("sendInitialEvents").is_some_and(|v| v == "true"),
            bookmarks: query
                .get("allowWatchBookmarks")
                .is_some_and(|v| v == "true"),
            timeout: query.get("timeoutSeconds").and_then(|t| t.parse().ok()),
            table: wants_table(accept).then(|| include_object(query)),
            partial: accept
                .split(',')
                .next()
                .is_some_and(|a| a.contains("as=PartialObjectMetadata")),
        };
        let stream = watch::watch(state.clone(), info.clone(), namespace, filter, params)?;
        let mut r = Response::new(Body::from_stream(stream));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache, private"),
        );
        return Ok(r);
    }
    let (mut items, rv) = state
        .store
        .list(&info.group, &info.plural, namespace.as_deref());
    if info.group.is_empty() && info.plural == "events" {
        // One storage for both Event APIs, as on a real server: `kubectl describe` reads core
        // Events, kube-rs's recorder writes events.k8s.io ones.
        let (new_events, _) = state
            .store
            .list("events.k8s.io", "events", namespace.as_deref());
        items.extend(new_events.iter().map(core_event));
    }
    let items: Vec<&Value> = items.iter().filter(|o| filter.matches(o)).collect();
    let meta = json!({"resourceVersion": rv.to_string()});
    if wants_table(accept) {
        let t = table::table(info, &items, &include_object(query), meta);
        return Ok(with_content_type(
            json_response(StatusCode::OK, &t),
            "application/json;as=Table;v=v1;g=meta.k8s.io",
        ));
    }
    if accept
        .split(',')
        .next()
        .is_some_and(|a| a.contains("as=PartialObjectMetadataList"))
    {
        let list = json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "items": items.iter().map(|o| partial(o)).collect::<Vec<_>>()});
        return Ok(json_response(StatusCode::OK, &list));
    }
    let list = json!({"kind": format!("{}List", info.kind), "apiVersion": info.api_version(), "metadata": meta, "items": items});
    Ok(json_response(StatusCode::OK, &list))
}

/// An events.k8s.io/v1 Event as a core v1 Event.
fn core_event(e: &Value) -> Value {
    let time = e.get("eventTime").filter(|t| !t.is_null()).cloned();
    let first = e
        .get("deprecatedFirstTimestamp")
        .filter(|t| !t.is_null())
        .cloned()
        .or_else(|| time.clone());
    let last = e
        .pointer("/series/lastObservedTime")
        .or_else(|| e.get("deprecatedLastTimestamp").filter(|t| !t.is_null()))
        .cloned()
        .or_else(|| time.clone());
    let count = e
        .pointer("/series/count")
        .or_else(|| e.get("deprecatedCount"))
        .and_then(Value::as_i64)
        .unwrap_or(1);
    json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": e.get("metadata").cloned().unwrap_or(json!({})),
        "involvedObject": e.get("regarding").cloned().unwrap_or(json!({})),
        "related": e.get("related").cloned(),
        "reason": e.get("reason").cloned(),
        "message": e.get("note").cloned(),
        "type": e.get("type").cloned(),
        "action": e.get("action").cloned(),
        "source": {"component": e.get("reportingController").cloned()},
        "reportingComponent": e.get("reportingController").cloned(),
        "reportingInstance": e.get("reportingInstance").cloned(),
        "firstTimestamp": first,
        "lastTimestamp": last,
        "eventTime": time,
        "count": count,
    })
}

fn delete_options(query: &Query, body: &Value) -> DeleteOptions {
    let grace = query
        .get("gracePeriodSeconds")
        .and_then(|g| g.parse().ok())
        .or_else(|| body.get("gracePeriodSeconds").and_then(Value::as_i64));
    let policy = query
        .get("propagationPolicy")
        .cloned()
        .or_else(|| {
            body.get("propagationPolicy")
                .and_then(Value::as_str)
                .map(String::from)
        })
        .or_else(|| {
            (body.get("orphanDependents").and_then(Value::as_bool) == Some(true))
                .then(|| "Orphan".into())
        });
    DeleteOptions {
        grace,
        orphan: policy.as_deref() == Some("Orphan"),
        rv: body
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(String::from),
        uid: body
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(String::from),
    }
}

/// The autoscaling/v1 Scale of an object.
fn scale_of(info: &ResourceInfo, obj: &Value) -> Value {
    let paths = info.scale.clone().unwrap_or(super::resources::ScalePaths {
        spec_replicas: ".spec.replicas".into(),
        status_replicas: ".status.replicas".into(),
        label_selector: None,
    });
    let spec = table::eval(obj, &paths.spec_replicas)
        .and_then(Value::as_i64)
        .unwrap_or(if info.custom { 0 } else { 1 });
    let status = table::eval(obj, &paths.status_replicas)
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let selector = match &paths.label_selector {
        Some(p) => table::eval(obj, p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        None => obj
            .pointer("/spec/selector")
            .map(selector_string)
            .unwrap_or_default(),
    };
    let m = &obj["metadata"];
    json!({
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {"name": m["name"], "namespace": m["namespace"], "uid": m["uid"], "resourceVersion": m["resourceVersion"], "creationTimestamp": m["creationTimestamp"]},
        "spec": {"replicas": spec},
        "status": {"replicas": status, "selector": selector},
    })
}

fn set_path(obj: &mut Value, path: &str, value: Value) {
    let parts: Vec<&str> = path.trim_start_matches('.').split('.').collect();
    let Some((last, parents)) = parts.split_last() else {
        return;
    };
    let mut cur = obj;
    for p in parents {
        if !cur.get(*p).is_some_and(Value::is_object) {
            cur[*p] = json!({});
        }
        cur = &mut cur[*p];
    }
    cur[*last] = value;
}

fn write_scale(
    state: &Shared,
    info: &ResourceInfo,
    ns: &str,
    name: &str,
    opts: &WriteOptions,
    new_scale: impl Fn(&Value) -> Result<Value, ApiError>,
) -> Result<Response, ApiError> {
    let spec_path = info
        .scale
        .as_ref()
        .map(|s| s.spec_replicas.clone())
        .unwrap_or_else(|| ".spec.replicas".into());
    let (obj, _) = ops::update_with(state, info, ns, name, None, opts, |old| {
        let scale = new_scale(&scale_of(info, old))?;
        let replicas = scale
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .ok_or_else(|| {
                ApiError::invalid(
                    "Scale",
                    "autoscaling",
                    name,
                    "spec.replicas: Required value",
                )
            })?;
        let mut new = old.clone();
        set_path(&mut new, &spec_path, json!(replicas));
        match scale
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            Some(rv) => new["metadata"]["resourceVersion"] = json!(rv),
            None => {
                if let Some(m) = new["metadata"].as_object_mut() {
                    m.remove("resourceVersion");
                }
            }
        }
        Ok(new)
    })?;
    Ok(json_response(StatusCode::OK, &scale_of(info, &obj)))
}

fn token_request(state: &Shared, ns: &str, name: &str, body: Value) -> Result<Response, ApiError> {
    if state
        .store
        .get(&super::store::Key::new("", "serviceaccounts", ns, name))
        .is_none()
    {
        return Err(ApiError::not_found("", "serviceaccounts", name));
    }
    let token = auth::issue_token(state, ns, name);
    let seconds = body
        .pointer("/spec/expirationSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(3600);
    let expires = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_secs(seconds))
        .unwrap_or_else(|_| jiff::Timestamp::now());
    let response = json!({
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": ops::now()},
        "spec": body.get("spec").cloned().unwrap_or(json!({})),
        "status": {"token": token, "expirationTimestamp": expires.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()},
    });
    Ok(json_response(StatusCode::CREATED, &response))
}

fn self_review(state: &Shared, user: &UserInfo, mut body: Value) -> Value {
    let ra = body
        .pointer("/spec/resourceAttributes")
        .cloned()
        .unwrap_or(json!({}));
    let s = |k: &str| ra.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let attributes = Attributes {
        verb: s("verb"),
        api_group: s("group"),
        resource: s("resource"),
        subresource: s("subresource"),
        namespace: s("namespace"),
        name: s("name"),
    };
    let status = match auth::authorize(state, user, &attributes) {
        Ok(()) => json!({"allowed": true}),
        Err(e) => json!({"allowed": false, "reason": e.message}),
    };
    body["status"] = status;
    body["apiVersion"] = json!("authorization.k8s.io/v1");
    body["kind"] = json!("SelfSubjectAccessReview");
    body
}
