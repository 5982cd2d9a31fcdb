//! Admission of custom resources the way the API server does it for CRDs: defaults from the
//! OpenAPI schema, the schema itself (types, required fields, enums, patterns, bounds), unknown
//! fields pruned (or refused under strict field validation), and the CEL
//! `x-kubernetes-validations` rules.
//!
//! (interface stub: the implementation replaces the body, keeping the signatures)

use serde_json::Value;

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
    /// The `Status` object the API server answers with (code 422, reason `Invalid`), with the
    /// message kubectl prints: `Pipeline.jetflow.io "x" is invalid: spec.source: Invalid value: ...`.
    pub fn to_status(&self) -> Value {
        serde_json::json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": format!("{}.{} \"{}\" is invalid", self.kind, self.group, self.name),
            "reason": "Invalid",
            "code": 422,
        })
    }
}

/// The admission of every custom resource the cluster knows, built from their CRDs.
#[derive(Clone, Debug, Default)]
pub struct CrdAdmission {
    crds: Vec<Value>,
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
        Self { crds }
    }

    /// Adds or replaces the CRD of one resource (a CRD applied to the running cluster).
    pub fn register(&mut self, crd: Value) {
        self.crds.push(crd);
    }

    /// Checks `object` (the whole object as it would be stored, after the patch was applied),
    /// setting defaults and pruning unknown fields in place. Resources without a CRD pass
    /// unchanged. Returns the warnings to send back (`Warning` headers), e.g. for unknown
    /// fields pruned.
    pub fn admit(&self, _request: &Request<'_>, _object: &mut Value) -> Result<Vec<String>, Invalid> {
        let _ = &self.crds;
        Ok(Vec::new())
    }
}
