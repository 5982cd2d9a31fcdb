//! The OpenAPI schema validation of a custom resource, as kube-openapi's `SchemaValidator`
//! runs it for the API server (Kubernetes 1.32) and as `apiextensions-apiserver` turns its
//! results into field errors: the same checks in the same order, the same messages
//! (`spec.parallelism in body should be greater than or equal to 1`), the same paths.
//!
//! On an update of the main resource the checks ratchet: a field equal to its old value is not
//! checked again, so a schema made stricter does not block edits elsewhere in the object.

use serde_json::{Number, Value};

use super::field::{BadValue, ErrorType, FieldError, go_float, go_quote};
use super::formats;

/// Validates `value` against `schema`; `prefix` is the field path of the validated value
/// (empty for the whole object, `status` for a status write). `old` turns on ratcheting.
pub(crate) fn validate(
    schema: &Value,
    value: &Value,
    old: Option<&Value>,
    prefix: &str,
) -> Vec<FieldError> {
    let mut v = Validator {
        prefix,
        errors: Vec::new(),
    };
    v.node(schema, value, old, "");
    v.errors
}

struct Validator<'a> {
    prefix: &'a str,
    errors: Vec<FieldError>,
}

fn types(schema: &Value) -> Vec<&str> {
    if schema
        .get("x-kubernetes-int-or-string")
        .and_then(Value::as_bool)
        == Some(true)
    {
        return vec!["integer", "string"];
    }
    schema
        .get("type")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .into_iter()
        .collect()
}

/// The format the API server keeps (`StripUnsupportedFormatsPostProcess`); others are ignored.
fn format(schema: &Value) -> Option<&str> {
    let f = schema.get("format").and_then(Value::as_str)?;
    formats::supported(f).then_some(f)
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::String(_) => "string",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn as_f64(n: &Number) -> f64 {
    n.as_f64().unwrap_or(0.0)
}

impl Validator<'_> {
    /// The field path of a kube-openapi name (`.spec.x` or `spec.x`).
    fn path(&self, name: &str) -> String {
        let name = name.trim_start_matches('.');
        match (self.prefix.is_empty(), name.is_empty()) {
            (_, true) => self.prefix.to_owned(),
            (true, false) => name.to_owned(),
            (false, false) => format!("{}.{name}", self.prefix),
        }
    }

    fn push(&mut self, kind: ErrorType, name: &str, value: BadValue, detail: String) {
        let path = self.path(name);
        self.errors
            .push(FieldError::new(kind, &path, value, detail));
    }

    fn node(&mut self, schema: &Value, data: &Value, old: Option<&Value>, path: &str) {
        if old.is_some_and(|o| o == data) {
            return; // ratcheting: unchanged, not checked again
        }
        if data.is_null() {
            self.type_check(schema, data, path);
            self.enum_check(schema, data, path);
            return;
        }
        self.type_check(schema, data, path);
        self.junctors(schema, data, path);
        if let Value::String(s) = data {
            self.string_check(schema, s, path);
            self.format_check(schema, s, path);
        }
        if let Value::Number(n) = data {
            self.number_check(schema, n, path);
        }
        if let Value::Array(items) = data {
            self.array_check(schema, items, old.and_then(Value::as_array), path);
        }
        self.enum_check(schema, data, path);
        if let Value::Object(map) = data {
            self.object_check(schema, map, old.and_then(Value::as_object), path);
        }
    }

    fn type_check(&mut self, schema: &Value, data: &Value, path: &str) {
        let types = types(schema);
        let format = schema
            .get("format")
            .and_then(Value::as_str)
            .filter(|_| format(schema).is_some());
        if types.is_empty() && format.is_none() {
            return;
        }
        let joined = types.join(",");
        if data.is_null() {
            if !types.is_empty()
                && !types.contains(&"null")
                && schema.get("nullable").and_then(Value::as_bool) != Some(true)
            {
                self.push(
                    ErrorType::TypeInvalid,
                    path,
                    BadValue::str("null"),
                    format!("{path} in body must be of type {joined}: \"null\""),
                );
            }
            return;
        }
        let actual = json_type(data);
        let float_int = actual == "number"
            && data.as_f64().is_some_and(|f| f.fract() == 0.0)
            && types.contains(&"integer");
        let int_float = actual == "integer" && types.contains(&"number");
        let numeric = types.contains(&"number") || types.contains(&"integer");
        if !numeric && format.is_some() && matches!(data, Value::String(_) | Value::Array(_)) {
            return;
        }
        if !(types.contains(&actual) || float_int || int_float) {
            self.push(
                ErrorType::TypeInvalid,
                path,
                BadValue::str(actual),
                format!(
                    "{path} in body must be of type {joined}: {}",
                    go_quote(actual)
                ),
            );
        }
    }

    fn junctors(&mut self, schema: &Value, data: &Value, path: &str) {
        if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
            for branch in all {
                self.node(branch, data, None, path);
            }
        }
        let passes = |branch: &Value| validate(branch, data, None, "").is_empty();
        let whole = go_quote(path);
        if let Some(any) = schema.get("anyOf").and_then(Value::as_array)
            && !any.iter().any(passes)
        {
            let path = self.prefix.to_owned();
            self.errors.push(FieldError::invalid(
                &path,
                BadValue::str(""),
                format!("{whole} must validate at least one schema (anyOf)"),
            ));
        }
        if let Some(one) = schema.get("oneOf").and_then(Value::as_array)
            && one.iter().filter(|b| passes(b)).count() != 1
        {
            let path = self.prefix.to_owned();
            self.errors.push(FieldError::invalid(
                &path,
                BadValue::str(""),
                format!("{whole} must validate one and only one schema (oneOf)"),
            ));
        }
        if let Some(not) = schema.get("not")
            && passes(not)
        {
            let path = self.prefix.to_owned();
            self.errors.push(FieldError::invalid(
                &path,
                BadValue::str(""),
                format!("{whole} must not validate the schema (not)"),
            ));
        }
    }

    fn string_check(&mut self, schema: &Value, s: &str, path: &str) {
        let len = s.chars().count() as u64;
        if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
            && len > max
        {
            self.push(
                ErrorType::TooLong,
                path,
                BadValue::str("<value omitted>"),
                format!("may not be more than {max} bytes"),
            );
            return;
        }
        if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
            && len < min
        {
            self.push(
                ErrorType::Invalid,
                path,
                BadValue::str(s),
                format!("{path} in body should be at least {min} chars long"),
            );
            return;
        }
        if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
            match formats::regex(pattern) {
                Ok(re) if re.is_match(s) => {}
                Ok(_) => self.push(
                    ErrorType::Invalid,
                    path,
                    BadValue::str(s),
                    format!("{path} in body should match '{pattern}'"),
                ),
                Err(e) => self.push(
                    ErrorType::Invalid,
                    path,
                    BadValue::str(s),
                    format!("{path} in body should match '{pattern}, but pattern is invalid: {e}'"),
                ),
            }
        }
    }

    fn format_check(&mut self, schema: &Value, s: &str, path: &str) {
        if let Some(f) = format(schema)
            && !formats::valid(f, s)
        {
            self.push(
                ErrorType::TypeInvalid,
                path,
                BadValue::str(s),
                format!("{path} in body must be of type {f}: {}", go_quote(s)),
            );
        }
    }

    fn number_check(&mut self, schema: &Value, n: &Number, path: &str) {
        let value = BadValue::Json(Value::Number(n.clone()));
        let is_int = n.is_i64() || n.is_u64();
        if let Some(factor) = schema.get("multipleOf").and_then(Value::as_f64) {
            let bad = if factor <= 0.0 {
                true
            } else if is_int && factor.fract() == 0.0 {
                n.as_i64().is_some_and(|i| i % (factor as i64) != 0)
            } else {
                let f = as_f64(n);
                let mult = if factor < 1.0 {
                    1.0 / factor * f
                } else {
                    f / factor
                };
                mult.fract() != 0.0
            };
            if bad {
                let shown = if is_int {
                    (factor as i64).to_string()
                } else {
                    go_float(factor)
                };
                self.push(
                    ErrorType::Invalid,
                    path,
                    value.clone(),
                    format!("{path} in body should be a multiple of {shown}"),
                );
            }
        }
        let exclusive = |key: &str| schema.get(key).and_then(Value::as_bool) == Some(true);
        if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
            let excl = exclusive("exclusiveMinimum");
            let (bad, shown) = match n.as_i64() {
                Some(i) if is_int => {
                    let m = min as i64;
                    (if excl { i <= m } else { i < m }, m.to_string())
                }
                _ => {
                    let f = as_f64(n);
                    (if excl { f <= min } else { f < min }, go_float(min))
                }
            };
            if bad {
                let op = if excl {
                    "greater than"
                } else {
                    "greater than or equal to"
                };
                self.push(
                    ErrorType::Invalid,
                    path,
                    value.clone(),
                    format!("{path} in body should be {op} {shown}"),
                );
            }
        }
        if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
            let excl = exclusive("exclusiveMaximum");
            let (bad, shown) = match n.as_i64() {
                Some(i) if is_int => {
                    let m = max as i64;
                    (if excl { i >= m } else { i > m }, m.to_string())
                }
                _ => {
                    let f = as_f64(n);
                    (if excl { f >= max } else { f > max }, go_float(max))
                }
            };
            if bad {
                let op = if excl {
                    "less than"
                } else {
                    "less than or equal to"
                };
                self.push(
                    ErrorType::Invalid,
                    path,
                    value,
                    format!("{path} in body should be {op} {shown}"),
                );
            }
        }
    }

    fn array_check(
        &mut self,
        schema: &Value,
        items: &[Value],
        old: Option<&Vec<Value>>,
        path: &str,
    ) {
        if let Some(item_schema) = schema.get("items").filter(|s| s.is_object()) {
            let map_list =
                schema.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("map");
            let keys: Vec<&str> = schema
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|k| k.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            for (i, item) in items.iter().enumerate() {
                // Only the items of map lists are matched to their old selves.
                let old_item = if map_list {
                    old.and_then(|o| {
                        o.iter()
                            .find(|o| keys.iter().all(|k| o.get(k) == item.get(k)))
                    })
                } else {
                    None
                };
                self.node(item_schema, item, old_item, &format!("{path}[{i}]"));
            }
        }
        let size = items.len() as i64;
        if let Some(min) = schema.get("minItems").and_then(Value::as_i64)
            && size < min
        {
            self.push(
                ErrorType::Invalid,
                path,
                BadValue::Int(size),
                format!("{path} in body should have at least {min} items"),
            );
        }
        if let Some(max) = schema.get("maxItems").and_then(Value::as_i64)
            && size > max
        {
            self.push(
                ErrorType::TooMany,
                path,
                BadValue::Int(size),
                format!("must have at most {max} items"),
            );
        }
        if schema.get("uniqueItems").and_then(Value::as_bool) == Some(true)
            && items
                .iter()
                .enumerate()
                .any(|(i, a)| items[..i].contains(a))
        {
            self.push(
                ErrorType::Invalid,
                path,
                BadValue::str(""),
                format!("{path} in body shouldn't contain duplicates"),
            );
        }
    }

    fn enum_check(&mut self, schema: &Value, data: &Value, path: &str) {
        let Some(values) = schema
            .get("enum")
            .and_then(Value::as_array)
            .filter(|v| !v.is_empty())
        else {
            return;
        };
        let same = |e: &Value| match (e, data) {
            (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
            _ => e == data,
        };
        if !values.iter().any(same) {
            let shown: Vec<String> = values
                .iter()
                .map(|v| match v {
                    Value::String(s) => go_quote(s),
                    other => go_quote(&other.to_string()),
                })
                .collect();
            self.push(
                ErrorType::NotSupported,
                path,
                BadValue::Json(data.clone()),
                format!("supported values: {}", shown.join(", ")),
            );
        }
    }

    fn object_check(
        &mut self,
        schema: &Value,
        map: &serde_json::Map<String, Value>,
        old: Option<&serde_json::Map<String, Value>>,
        path: &str,
    ) {
        let size = map.len() as i64;
        if let Some(min) = schema.get("minProperties").and_then(Value::as_i64)
            && size < min
        {
            self.push(
                ErrorType::Invalid,
                path,
                BadValue::Int(size),
                format!("{path} in body should have at least {min} properties"),
            );
        }
        if let Some(max) = schema.get("maxProperties").and_then(Value::as_i64)
            && size > max
        {
            self.push(
                ErrorType::TooMany,
                path,
                BadValue::Int(size),
                format!("must have at most {max} items"),
            );
        }
        let props = schema.get("properties").and_then(Value::as_object);
        let declared = |k: &str| props.is_some_and(|p| p.contains_key(k));
        let granular =
            schema.get("x-kubernetes-map-type").and_then(Value::as_str) != Some("atomic");
        let old_of = |k: &str| {
            if granular {
                old.and_then(|o| o.get(k))
            } else {
                None
            }
        };
        if let Some(add) = schema.get("additionalProperties").filter(|a| a.is_object()) {
            for (key, value) in map.iter().filter(|(k, _)| !declared(k)) {
                self.node(add, value, old_of(key), &format!("{path}.{key}"));
            }
        }
        if let Some(props) = props {
            for (name, prop) in props {
                if let Some(value) = map.get(name) {
                    let child = if path.is_empty() {
                        name.clone()
                    } else {
                        format!("{path}.{name}")
                    };
                    self.node(prop, value, old_of(name), &child);
                }
            }
        }
        if let Some(required) = schema.get("required").and_then(Value::as_array) {
            for key in required.iter().filter_map(Value::as_str) {
                if !map.contains_key(key) {
                    self.push(
                        ErrorType::Required,
                        &format!("{path}.{key}"),
                        BadValue::str(""),
                        String::new(),
                    );
                }
            }
        }
    }
}
