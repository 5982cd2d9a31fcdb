//! Admission of custom resources the way the API server (Kubernetes 1.32) does it for CRDs,
//! in its order: a main-resource write keeps the stored `status` and a status write keeps
//! everything but `status` (when the CRD has a status subresource); unknown fields are pruned
//! (a warning each, `unknown field "spec.foo"`) or refused under strict field validation;
//! `null`s of non-nullable fields are dropped and the schema's `default`s filled in; then
//! `kind`, `apiVersion` and (on create) `metadata.name` are checked, the OpenAPI schema (types,
//! required fields, enums, patterns, formats, bounds; ratcheted on updates), and, when that
//! found nothing blocking, the CEL `x-kubernetes-validations` rules.
//!
//! Pure code: no I/O, no locks, nothing to shut down. A refusal is an [`Invalid`] whose
//! [`Invalid::to_status`] is the `Status` the API server answers with, worded as it words it.
//!
//! The object given to [`CrdAdmission::admit`] is the whole object as it would be stored (after
//! a patch was applied), with `apiVersion`, `kind` and `metadata`.

mod cel;
mod field;
pub(crate) use field::go_quote;
mod formats;
mod openapi;
mod structural;

use std::sync::Arc;

use serde_json::{Value, json};

use self::field::{BadValue, ErrorType, FieldError};

/// The `reason` of the single [`Cause`] of an [`Invalid`] that is a strict decoding error
/// (unknown fields under `fieldValidation=Strict`): its message is the whole message of the
/// API server's 400 `BadRequest`, and [`Invalid::to_status`] answers 400 rather than 422.
pub const STRICT_DECODING: &str = "StrictDecodingError";

/// One reason an object was refused, as the API server reports it in `details.causes`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cause {
    /// `FieldValueInvalid`, `FieldValueRequired`, `FieldValueNotSupported`, `FieldValueTypeInvalid`, ...
    pub reason: String,
    /// The field path, `spec.source`.
    pub field: String,
    /// The message without the field path, as the API server words it.
    pub message: String,
}

/// An object refused by admission: becomes a 422 `Status` of reason `Invalid`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    /// `Pipeline`
    pub kind: String,
    /// `jetflow.io`
    pub group: String,
    /// The object's name.
    pub name: String,
    /// Every cause found.
    pub causes: Vec<Cause>,
}

impl Invalid {
    /// Whether this is a strict decoding error (unknown fields under `fieldValidation=Strict`),
    /// which the API server answers with 400 `BadRequest`.
    pub fn is_strict_decoding(&self) -> bool {
        self.causes.len() == 1 && self.causes[0].reason == STRICT_DECODING
    }

    /// The HTTP status code of [`Invalid::to_status`]: 422, or 400 for a strict decoding error.
    pub fn code(&self) -> u16 {
        if self.is_strict_decoding() { 400 } else { 422 }
    }

    /// The `Status` the API server answers with (code 422, reason `Invalid`), with the
    /// message kubectl prints: `Pipeline.jetflow.io "x" is invalid: spec.source: Invalid value: ...`.
    /// A strict decoding error is a 400 `BadRequest` without details, as the server sends it.
    pub fn to_status(&self) -> Value {
        if self.is_strict_decoding() {
            return json!({
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": self.causes[0].message,
                "reason": "BadRequest",
                "code": 400,
            });
        }
        let qualified = if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}.{}", self.kind, self.group)
        };
        // errs.ToAggregate(): each distinct `field: message` once; one without brackets.
        let mut seen: Vec<String> = Vec::new();
        for c in &self.causes {
            let m = format!("{}: {}", c.field, c.message);
            if !seen.contains(&m) {
                seen.push(m);
            }
        }
        let message = match seen.len() {
            0 => format!("{qualified} \"{}\" is invalid", self.name),
            1 => format!("{qualified} \"{}\" is invalid: {}", self.name, seen[0]),
            _ => format!(
                "{qualified} \"{}\" is invalid: [{}]",
                self.name,
                seen.join(", ")
            ),
        };
        let mut details = serde_json::Map::new();
        for (key, value) in [
            ("name", &self.name),
            ("group", &self.group),
            ("kind", &self.kind),
        ] {
            if !value.is_empty() {
                details.insert(key.into(), json!(value));
            }
        }
        let causes: Vec<Value> = self
            .causes
            .iter()
            .map(|c| {
                let mut cause = serde_json::Map::new();
                for (key, value) in [
                    ("reason", &c.reason),
                    ("message", &c.message),
                    ("field", &c.field),
                ] {
                    if !value.is_empty() {
                        cause.insert(key.into(), json!(value));
                    }
                }
                Value::Object(cause)
            })
            .collect();
        if !causes.is_empty() {
            details.insert("causes".into(), Value::Array(causes));
        }
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": "Invalid",
            "details": details,
            "code": 422,
        })
    }
}

/// One served version of a CRD, with its schema and compiled rules.
#[derive(Debug)]
struct Version {
    name: String,
    schema: Option<Value>,
    rules: Option<cel::RuleTree>,
    status_subresource: bool,
}

/// One CRD, ready for admission.
#[derive(Debug)]
struct Crd {
    /// `pipelines.jetflow.io`
    name: String,
    group: String,
    plural: String,
    kind: String,
    versions: Vec<Version>,
}

impl Crd {
    fn parse(crd: &Value) -> Option<Crd> {
        let spec = crd.get("spec")?;
        let group = spec.get("group")?.as_str()?.to_owned();
        let names = spec.get("names")?;
        let plural = names.get("plural")?.as_str()?.to_owned();
        let kind = names.get("kind")?.as_str()?.to_owned();
        let name = crd
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| format!("{plural}.{group}"));
        let top_schema = spec.pointer("/validation/openAPIV3Schema");
        let top_status = spec.pointer("/subresources/status").is_some();
        let versions = spec
            .get("versions")
            .and_then(Value::as_array)
            .map(|vs| {
                vs.iter()
                    .filter_map(|v| {
                        let schema = v.pointer("/schema/openAPIV3Schema").or(top_schema).cloned();
                        Some(Version {
                            name: v.get("name")?.as_str()?.to_owned(),
                            rules: schema.as_ref().and_then(cel::RuleTree::build),
                            schema,
                            status_subresource: v.pointer("/subresources/status").is_some()
                                || top_status,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        Some(Crd {
            name,
            group,
            plural,
            kind,
            versions,
        })
    }
}

/// The admission of every custom resource the cluster knows, built from their CRDs.
#[derive(Clone, Debug, Default)]
pub struct CrdAdmission {
    crds: Vec<Arc<Crd>>,
}

/// What one request asks admission to check.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// The resource's group, `jetflow.io`.
    pub group: &'a str,
    /// The version of the request, `v1alpha1`.
    pub version: &'a str,
    /// The plural resource name, `pipelines`.
    pub resource: &'a str,
    /// `status` or `scale` for a subresource write, `None` for the main resource.
    pub subresource: Option<&'a str>,
    /// The stored object before the write (an update, patch or apply), `None` on create.
    pub old: Option<&'a Value>,
    /// `fieldValidation=Strict`: unknown fields are refused rather than pruned.
    pub strict: bool,
}

impl CrdAdmission {
    /// Admission for the given CustomResourceDefinitions (apiextensions.k8s.io/v1, as JSON).
    pub fn new(crds: Vec<Value>) -> Self {
        let mut admission = Self::default();
        for crd in crds {
            admission.register(crd);
        }
        admission
    }

    /// Adds or replaces the CRD of one resource (a CRD applied to the running cluster).
    pub fn register(&mut self, crd: Value) {
        let Some(crd) = Crd::parse(&crd) else { return };
        self.crds
            .retain(|c| c.name != crd.name && !(c.group == crd.group && c.plural == crd.plural));
        self.crds.push(Arc::new(crd));
    }

    /// Forgets the CRD named `name` (`pipelines.jetflow.io`), when it is deleted.
    pub fn unregister(&mut self, name: &str) {
        self.crds.retain(|c| c.name != name);
    }

    fn find(&self, group: &str, resource: &str, version: &str) -> Option<(&Crd, &Version)> {
        let crd = self
            .crds
            .iter()
            .find(|c| c.group == group && c.plural == resource)?;
        let version = crd.versions.iter().find(|v| v.name == version)?;
        Some((crd, version))
    }

    /// The fields of `object` its schema does not declare, as server-side apply names them
    /// when it refuses an apply configuration: `.spec.foo` (the API server answers such an
    /// apply with `failed to create typed patch object (jetflow.io/v1alpha1, Kind=Pipeline):
    /// .spec.foo: field not declared in schema`). Empty for resources without a CRD.
    pub fn undeclared_fields(
        &self,
        group: &str,
        version: &str,
        resource: &str,
        object: &Value,
    ) -> Vec<String> {
        let Some((_, v)) = self.find(group, resource, version) else {
            return Vec::new();
        };
        let Some(schema) = &v.schema else {
            return Vec::new();
        };
        let mut copy = object.clone();
        structural::prune(&mut copy, schema)
            .into_iter()
            .map(|p| format!(".{p}"))
            .collect()
    }

    /// Checks `object` (the whole object as it would be stored, after the patch was applied),
    /// setting defaults and pruning unknown fields in place. Resources without a CRD pass
    /// unchanged. Returns the warnings to send back (`Warning` headers), e.g. for unknown
    /// fields pruned.
    pub fn admit(&self, request: &Request<'_>, object: &mut Value) -> Result<Vec<String>, Invalid> {
        let Some((crd, version)) = self.find(request.group, request.resource, request.version)
        else {
            return Ok(Vec::new());
        };
        let name = object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let invalid = |causes: Vec<Cause>| Invalid {
            kind: crd.kind.clone(),
            group: crd.group.clone(),
            name: name.clone(),
            causes,
        };
        let status_write = request.subresource == Some("status");

        if let Value::Object(map) = object {
            let api_version = format!("{}/{}", crd.group, version.name);
            map.entry("apiVersion")
                .or_insert_with(|| json!(api_version));
            map.entry("kind").or_insert_with(|| json!(crd.kind));
        }
        if version.status_subresource {
            keep_stored_parts(object, request.old, status_write);
        }

        let mut warnings = Vec::new();
        if let Some(schema) = &version.schema {
            let unknown = structural::prune(object, schema);
            if request.strict && !unknown.is_empty() {
                let fields: Vec<String> = unknown
                    .iter()
                    .map(|p| format!("unknown field \"{p}\""))
                    .collect();
                let message = format!(
                    "{} in version \"{}\" cannot be handled as a {}: strict decoding error: {}",
                    crd.kind,
                    version.name,
                    crd.kind,
                    fields.join(", ")
                );
                return Err(invalid(vec![Cause {
                    reason: STRICT_DECODING.into(),
                    field: String::new(),
                    message,
                }]));
            }
            warnings.extend(unknown.iter().map(|p| format!("unknown field \"{p}\"")));
            structural::prune_nulls(object, Some(schema));
            structural::default(object, schema);
        }

        let mut errors = type_meta_errors(object, crd, version);
        if errors.is_empty() && request.old.is_none() && !status_write {
            errors.extend(name_errors(&name));
        }
        if errors.is_empty()
            && let Some(schema) = &version.schema
        {
            if status_write {
                if let Some(status) = object.get("status") {
                    let status_schema =
                        schema.pointer("/properties/status").unwrap_or(&Value::Null);
                    errors.extend(openapi::validate(status_schema, status, None, "status"));
                }
            } else {
                errors.extend(openapi::validate(schema, object, request.old, ""));
            }
        }
        if let Some(rules) = &version.rules {
            let blocking = errors.iter().any(|e| {
                matches!(
                    e.kind,
                    ErrorType::NotSupported
                        | ErrorType::Required
                        | ErrorType::TooLong
                        | ErrorType::TooMany
                        | ErrorType::TypeInvalid
                )
            });
            if blocking {
                errors.push(FieldError::invalid("", BadValue::Json(Value::Null),
                    "some validation rules were not checked because the object was invalid; correct the existing errors to complete validation"));
            } else {
                let outcome = cel::validate(
                    rules,
                    object,
                    request.old,
                    !status_write && request.old.is_some(),
                );
                errors.extend(outcome.errors);
                warnings.extend(outcome.warnings);
            }
        }
        if errors.is_empty() {
            Ok(warnings)
        } else {
            Err(invalid(errors.iter().map(FieldError::to_cause).collect()))
        }
    }
}

/// A main-resource write cannot change `status`, a status write only `status` (and metadata,
/// which the API server handles): the other parts come from the stored object.
fn keep_stored_parts(object: &mut Value, old: Option<&Value>, status_write: bool) {
    let Value::Object(map) = object else { return };
    if status_write {
        let Some(Value::Object(old)) = old else {
            return;
        };
        let keep = |k: &str| matches!(k, "status" | "metadata" | "apiVersion" | "kind");
        map.retain(|k, _| keep(k));
        for (k, v) in old.iter().filter(|(k, _)| !keep(k)) {
            map.insert(k.clone(), v.clone());
        }
    } else {
        match old.and_then(|o| o.get("status")) {
            Some(status) => {
                map.insert("status".into(), status.clone());
            }
            None => {
                map.remove("status");
            }
        }
    }
}

/// `kind` and `apiVersion` must be the CRD's (`ValidateTypeMeta`).
fn type_meta_errors(object: &Value, crd: &Crd, version: &Version) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if kind != crd.kind {
        errors.push(FieldError::invalid(
            "kind",
            BadValue::str(kind),
            format!("must be {}", crd.kind),
        ));
    }
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let want = format!("{}/{}", crd.group, version.name);
    if api_version != want {
        errors.push(FieldError::invalid(
            "apiVersion",
            BadValue::str(api_version),
            format!("must be {want}"),
        ));
    }
    errors
}

const DNS1123_SUBDOMAIN: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";

/// `metadata.name` of a new custom resource: a DNS-1123 subdomain (`ValidateObjectMeta` with
/// `NameIsDNSSubdomain`); the API server has already turned a `generateName` into a name.
fn name_errors(name: &str) -> Vec<FieldError> {
    if name.is_empty() {
        return vec![FieldError::required(
            "metadata.name",
            "name or generateName is required",
        )];
    }
    let mut errors = Vec::new();
    if name.len() > 253 {
        errors.push(FieldError::invalid(
            "metadata.name",
            BadValue::str(name),
            "must be no more than 253 characters",
        ));
    }
    let valid = formats::regex(&format!("^{DNS1123_SUBDOMAIN}$")).is_ok_and(|re| re.is_match(name));
    if !valid {
        errors.push(FieldError::invalid(
            "metadata.name",
            BadValue::str(name),
            format!(
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', \
                 and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '{DNS1123_SUBDOMAIN}')"
            ),
        ));
    }
    errors
}
