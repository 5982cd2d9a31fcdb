//! Field errors worded as `k8s.io/apimachinery/pkg/util/validation/field` words them (Kubernetes
//! 1.32): `spec.parallelism: Invalid value: -1: spec.parallelism in body should be greater than or
//! equal to 1`. Values print as Go prints the decoded JSON: strings quoted (`%q`), numbers and
//! booleans bare (`%v`), `null` as `"null"`, maps and lists in Go syntax (`%#v`).

use serde_json::Value;

use super::Cause;

/// The kinds of field error the API server reports, one-to-one with `metav1.CauseType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ErrorType {
    Required,
    Duplicate,
    Invalid,
    NotSupported,
    Forbidden,
    TooLong,
    TooMany,
    TypeInvalid,
}

impl ErrorType {
    /// The cause type (`reason` of a Status cause).
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Self::Required => "FieldValueRequired",
            Self::Duplicate => "FieldValueDuplicate",
            Self::Invalid => "FieldValueInvalid",
            Self::NotSupported => "FieldValueNotSupported",
            Self::Forbidden => "FieldValueForbidden",
            Self::TooLong => "FieldValueTooLong",
            Self::TooMany => "FieldValueTooMany",
            Self::TypeInvalid => "FieldValueTypeInvalid",
        }
    }

    fn text(self) -> &'static str {
        match self {
            Self::Required => "Required value",
            Self::Duplicate => "Duplicate value",
            Self::Invalid | Self::TypeInvalid => "Invalid value",
            Self::NotSupported => "Unsupported value",
            Self::Forbidden => "Forbidden",
            Self::TooLong => "Too long",
            Self::TooMany => "Too many",
        }
    }
}

/// The bad value of a field error.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum BadValue {
    /// A decoded JSON value.
    Json(Value),
    /// A Go `int` (counts), printed bare.
    Int(i64),
}

impl BadValue {
    pub(crate) fn str(s: impl Into<String>) -> Self {
        Self::Json(Value::String(s.into()))
    }
}

/// One field error.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct FieldError {
    pub(crate) kind: ErrorType,
    /// The field path (`spec.steps[1]`), or `<nil>` for none.
    pub(crate) field: String,
    pub(crate) value: BadValue,
    pub(crate) detail: String,
}

impl FieldError {
    pub(crate) fn new(
        kind: ErrorType,
        field: &str,
        value: BadValue,
        detail: impl Into<String>,
    ) -> Self {
        let field = if field.is_empty() {
            "<nil>".to_owned()
        } else {
            field.to_owned()
        };
        Self {
            kind,
            field,
            value,
            detail: detail.into(),
        }
    }

    pub(crate) fn invalid(field: &str, value: BadValue, detail: impl Into<String>) -> Self {
        Self::new(ErrorType::Invalid, field, value, detail)
    }

    pub(crate) fn required(field: &str, detail: impl Into<String>) -> Self {
        Self::new(ErrorType::Required, field, BadValue::str(""), detail)
    }

    /// The message without the field (`ErrorBody`).
    pub(crate) fn body(&self) -> String {
        let mut s = match self.kind {
            ErrorType::Required | ErrorType::Forbidden | ErrorType::TooLong => {
                self.kind.text().to_owned()
            }
            _ => format!("{}: {}", self.kind.text(), go_value(&self.value)),
        };
        if !self.detail.is_empty() {
            s.push_str(": ");
            s.push_str(&self.detail);
        }
        s
    }

    /// `field: body`, as `Error()` prints it.
    pub(crate) fn message(&self) -> String {
        format!("{}: {}", self.field, self.body())
    }

    pub(crate) fn to_cause(&self) -> Cause {
        Cause {
            reason: self.kind.reason().to_owned(),
            field: self.field.clone(),
            message: self.body(),
        }
    }
}

fn go_value(value: &BadValue) -> String {
    match value {
        BadValue::Int(i) => i.to_string(),
        BadValue::Json(Value::Null) => "\"null\"".to_owned(),
        BadValue::Json(Value::String(s)) => go_quote(s),
        BadValue::Json(v @ (Value::Number(_) | Value::Bool(_))) => go_sharp_v(v),
        BadValue::Json(v) => go_sharp_v(v),
    }
}

/// Go's `%#v` of a decoded JSON value (`map[string]interface {}{"a":1}`).
fn go_sharp_v(value: &Value) -> String {
    match value {
        Value::Null => "interface {}(nil)".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => go_number(n),
        Value::String(s) => go_quote(s),
        Value::Array(items) => {
            let inner: Vec<String> = items.iter().map(go_sharp_v).collect();
            format!("[]interface {{}}{{{}}}", inner.join(", "))
        }
        Value::Object(map) => {
            let inner: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{}:{}", go_quote(k), go_sharp_v(v)))
                .collect();
            format!("map[string]interface {{}}{{{}}}", inner.join(", "))
        }
    }
}

/// A JSON number as Go prints the int64 or float64 it decodes to.
pub(crate) fn go_number(n: &serde_json::Number) -> String {
    if let Some(i) = n.as_i64() {
        i.to_string()
    } else if let Some(u) = n.as_u64() {
        // Beyond int64 the Go decoder yields a float64.
        go_float(u as f64)
    } else {
        go_float(n.as_f64().unwrap_or(0.0))
    }
}

/// Go's `%v` of a float64 (`strconv.FormatFloat(f, 'g', -1, 64)`): the shortest digits, in
/// exponent form when the decimal exponent is below -4 or at least 6.
pub(crate) fn go_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".to_owned();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf" } else { "-Inf" }.to_owned();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0" } else { "0" }.to_owned();
    }
    // Shortest round-trip digits and decimal exponent, from Rust's `{:e}` (`1.5e3`).
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let negative = mantissa.starts_with('-');
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let sign = if negative { "-" } else { "" };
    if !(-4..6).contains(&exp) {
        let (first, rest) = digits.split_at(1);
        let frac = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let esign = if exp < 0 { '-' } else { '+' };
        return format!("{sign}{first}{frac}e{esign}{:02}", exp.abs());
    }
    let n = digits.len() as i32;
    if exp >= n - 1 {
        format!("{sign}{digits}{}", "0".repeat((exp - (n - 1)) as usize))
    } else if exp >= 0 {
        let (int, frac) = digits.split_at((exp + 1) as usize);
        format!("{sign}{int}.{frac}")
    } else {
        format!("{sign}0.{}{digits}", "0".repeat((-exp - 1) as usize))
    }
}

/// Go's `strconv.Quote`.
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_control() => {
                if (c as u32) <= 0xffff {
                    out.push_str(&format!("\\u{:04x}", c as u32));
                } else {
                    out.push_str(&format!("\\U{:08x}", c as u32));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A field path under construction, as `field.Path` prints it.
pub(crate) fn child(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

/// `path[key]` (a map key) or `path[3]` (a list index).
pub(crate) fn index(path: &str, key: impl std::fmt::Display) -> String {
    format!("{path}[{key}]")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_print_as_go_prints_them() {
        let e = FieldError::invalid("spec.parallelism", BadValue::Json(json!(-1)), "too small");
        assert_eq!(
            e.message(),
            "spec.parallelism: Invalid value: -1: too small"
        );
        let e = FieldError::invalid("spec", BadValue::str("object"), "set one");
        assert_eq!(e.message(), "spec: Invalid value: \"object\": set one");
        assert_eq!(
            FieldError::required("spec.source", "").message(),
            "spec.source: Required value"
        );
        assert_eq!(go_value(&BadValue::Json(Value::Null)), "\"null\"");
        assert_eq!(
            go_value(&BadValue::Json(json!({"b": [1, "x"], "a": true}))),
            "map[string]interface {}{\"a\":true, \"b\":[]interface {}{1, \"x\"}}"
        );
        assert_eq!(go_value(&BadValue::Json(json!(1.5))), "1.5");
    }

    #[test]
    fn floats_print_as_go_percent_v() {
        assert_eq!(go_float(100000.0), "100000");
        assert_eq!(go_float(1.0), "1");
        assert_eq!(go_float(0.25), "0.25");
        assert_eq!(go_float(0.00001), "1e-05");
        assert_eq!(go_float(1e21), "1e+21");
        assert_eq!(go_float(1e6), "1e+06");
        assert_eq!(go_float(123456789.0), "1.23456789e+08");
    }
}
