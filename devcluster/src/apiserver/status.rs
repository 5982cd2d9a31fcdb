//! API errors as the Kubernetes API server reports them: a `Status` object with a code, a
//! reason kubectl and kube-rs recognise, and a message in the API server's words.

use http::StatusCode;
use serde_json::{Value, json};

/// A failed request, answered with a `Status`.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// `NotFound`, `AlreadyExists`, `Conflict`, `Invalid`, ...
    pub reason: &'static str,
    /// Human-readable message.
    pub message: String,
    /// `details` of the Status, if any.
    pub details: Option<Value>,
    /// A full Status to send as is (admission's).
    pub raw: Option<Value>,
}

fn details(kind: &str, group: &str, name: &str) -> Value {
    json!({"name": name, "group": group, "kind": kind})
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
            raw: None,
        }
    }

    /// 404 for a named object; `resource` is the plural, qualified with its group.
    pub fn not_found(group: &str, plural: &str, name: &str) -> Self {
        let q = qualified(group, plural);
        Self {
            details: Some(details(plural, group, name)),
            ..Self::new(404, "NotFound", format!("{q} \"{name}\" not found"))
        }
    }

    /// 404 for a path that serves nothing.
    pub fn no_route() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    /// 409 AlreadyExists.
    pub fn already_exists(group: &str, plural: &str, name: &str) -> Self {
        let q = qualified(group, plural);
        Self {
            details: Some(details(plural, group, name)),
            ..Self::new(
                409,
                "AlreadyExists",
                format!("{q} \"{name}\" already exists"),
            )
        }
    }

    /// 409 Conflict for a stale resourceVersion.
    pub fn conflict(group: &str, plural: &str, name: &str) -> Self {
        let q = qualified(group, plural);
        Self {
            details: Some(details(plural, group, name)),
            ..Self::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {q} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
                ),
            )
        }
    }

    /// 409 Conflict with a message of its own (server-side apply conflicts).
    pub fn conflict_with(message: String, details: Value) -> Self {
        Self {
            details: Some(details),
            ..Self::new(409, "Conflict", message)
        }
    }

    /// 422 Invalid.
    pub fn invalid(kind: &str, group: &str, name: &str, message: &str) -> Self {
        let k = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        Self {
            details: Some(details(kind, group, name)),
            ..Self::new(
                422,
                "Invalid",
                format!("{k} \"{name}\" is invalid: {message}"),
            )
        }
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 401 Unauthorized.
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    /// 403 Forbidden with the authorizer's message.
    pub fn forbidden(message: String) -> Self {
        Self::new(403, "Forbidden", message)
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_allowed() -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
    }

    /// 410 Gone / Expired for a resourceVersion older than the history kept.
    pub fn expired(rv: &str) -> Self {
        Self::new(410, "Expired", format!("too old resource version: {rv}"))
    }

    /// 415 UnsupportedMediaType.
    pub fn unsupported_media(ct: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (this local API server does not read protobuf); got {ct}"
            ),
        )
    }

    /// 500 InternalError.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    /// A full Status given by someone else (admission), sent unchanged.
    pub fn from_status(status: Value) -> Self {
        let code = status.get("code").and_then(Value::as_u64).unwrap_or(422) as u16;
        let message = status
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("invalid")
            .to_string();
        Self {
            raw: Some(status),
            ..Self::new(code, "Invalid", message)
        }
    }

    /// The HTTP status code.
    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The `Status` object.
    pub fn to_status(&self) -> Value {
        if let Some(raw) = &self.raw {
            return raw.clone();
        }
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            status["details"] = d.clone();
        }
        status
    }
}

fn qualified(group: &str, plural: &str) -> String {
    if group.is_empty() {
        plural.to_string()
    } else {
        format!("{plural}.{group}")
    }
}

/// A success `Status` (deletecollection, deletes that return no object).
pub fn success(group: &str, plural: &str, name: &str, uid: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
        "details": {"name": name, "group": group, "kind": plural, "uid": uid},
    })
}
