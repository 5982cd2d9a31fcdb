//! Just enough of the Kubernetes protobuf encoding to read what `kubectl create <kind>` sends
//! for the simple kinds (Namespace, ConfigMap, Secret, ServiceAccount): the `k8s\0` envelope
//! (`runtime.Unknown`), ObjectMeta's name, namespace, labels, annotations and finalizers, and
//! the kinds' data maps. Anything else is refused with 415 by the caller.

use base64::Engine;
use serde_json::{Map, Value, json};

const MAGIC: &[u8] = b"k8s\0";

/// One protobuf field: its number and its raw value.
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

fn varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *buf.get(*pos)?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

fn fields(buf: &[u8]) -> Option<Vec<(u64, Field<'_>)>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let tag = varint(buf, &mut pos)?;
        let (number, wire) = (tag >> 3, tag & 7);
        let field = match wire {
            0 => Field::Varint(varint(buf, &mut pos)?),
            2 => {
                let len = usize::try_from(varint(buf, &mut pos)?).ok()?;
                let bytes = buf.get(pos..pos.checked_add(len)?)?;
                pos += len;
                Field::Bytes(bytes)
            }
            1 => {
                pos += 8;
                Field::Varint(0)
            }
            5 => {
                pos += 4;
                Field::Varint(0)
            }
            _ => return None,
        };
        out.push((number, field));
    }
    Some(out)
}

fn string(bytes: &[u8]) -> Value {
    Value::String(String::from_utf8_lossy(bytes).into_owned())
}

/// A map entry (`key = 1`, `value = 2`); `binary` values become base64.
fn entry(bytes: &[u8], binary: bool) -> Option<(String, Value)> {
    let mut key = String::new();
    let mut value = json!("");
    for (n, f) in fields(bytes)? {
        if let Field::Bytes(b) = f {
            match n {
                1 => key = String::from_utf8_lossy(b).into_owned(),
                2 if binary => value = json!(base64::engine::general_purpose::STANDARD.encode(b)),
                2 => value = string(b),
                _ => {}
            }
        }
    }
    Some((key, value))
}

fn object_meta(bytes: &[u8]) -> Option<Value> {
    let mut meta = Map::new();
    let mut labels = Map::new();
    let mut annotations = Map::new();
    let mut finalizers = Vec::new();
    for (n, f) in fields(bytes)? {
        let Field::Bytes(b) = f else { continue };
        if b.is_empty() {
            continue;
        }
        match n {
            1 => {
                meta.insert("name".into(), string(b));
            }
            2 => {
                meta.insert("generateName".into(), string(b));
            }
            3 => {
                meta.insert("namespace".into(), string(b));
            }
            11 => {
                let (k, v) = entry(b, false)?;
                labels.insert(k, v);
            }
            12 => {
                let (k, v) = entry(b, false)?;
                annotations.insert(k, v);
            }
            14 => finalizers.push(string(b)),
            _ => {}
        }
    }
    if !labels.is_empty() {
        meta.insert("labels".into(), Value::Object(labels));
    }
    if !annotations.is_empty() {
        meta.insert("annotations".into(), Value::Object(annotations));
    }
    if !finalizers.is_empty() {
        meta.insert("finalizers".into(), Value::Array(finalizers));
    }
    Some(Value::Object(meta))
}

/// Decodes a protobuf body of one of the simple kinds into its JSON form; `None` for anything
/// else.
pub fn decode(body: &[u8]) -> Option<Value> {
    let envelope = fields(body.strip_prefix(MAGIC)?)?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    for (n, f) in envelope {
        match (n, f) {
            (1, Field::Bytes(type_meta)) => {
                for (m, g) in fields(type_meta)? {
                    if let Field::Bytes(s) = g {
                        match m {
                            1 => api_version = String::from_utf8_lossy(s).into_owned(),
                            2 => kind = String::from_utf8_lossy(s).into_owned(),
                            _ => {}
                        }
                    }
                }
            }
            (2, Field::Bytes(r)) => raw = r,
            _ => {}
        }
    }
    let mut obj = Map::new();
    obj.insert("apiVersion".into(), json!(api_version));
    obj.insert("kind".into(), json!(kind));
    if (api_version.as_str(), kind.as_str())
        == ("authorization.k8s.io/v1", "SelfSubjectAccessReview")
    {
        return self_subject_access_review(raw);
    }
    let (data_field, binary_field) = match (api_version.as_str(), kind.as_str()) {
        ("v1", "Namespace") | ("v1", "ServiceAccount") => (None, None),
        ("v1", "ConfigMap") => (Some(("data", false)), Some(("binaryData", true))),
        ("v1", "Secret") => (Some(("data", true)), Some(("stringData", false))),
        _ => return None,
    };
    let mut data = Map::new();
    let mut other = Map::new();
    for (n, f) in fields(raw)? {
        match (n, f) {
            (1, Field::Bytes(b)) => {
                obj.insert("metadata".into(), object_meta(b)?);
            }
            (2, Field::Bytes(b)) if data_field.is_some() => {
                let (k, v) = entry(b, data_field.is_some_and(|d| d.1))?;
                data.insert(k, v);
            }
            (3, Field::Bytes(b)) if kind == "Secret" => {
                obj.insert("type".into(), string(b));
            }
            (3, Field::Bytes(b)) if kind == "ConfigMap" => {
                let (k, v) = entry(b, true)?;
                other.insert(k, v);
            }
            (4, Field::Bytes(b)) if kind == "Secret" => {
                let (k, v) = entry(b, false)?;
                other.insert(k, v);
            }
            (4, Field::Varint(v)) if kind == "ConfigMap" => {
                obj.insert("immutable".into(), json!(v != 0));
            }
            (5, Field::Varint(v)) if kind == "Secret" => {
                obj.insert("immutable".into(), json!(v != 0));
            }
            _ => {}
        }
    }
    if let Some((name, _)) = data_field.filter(|_| !data.is_empty()) {
        obj.insert(name.into(), Value::Object(data));
    }
    if let Some((name, _)) = binary_field.filter(|_| !other.is_empty()) {
        obj.insert(name.into(), Value::Object(other));
    }
    Some(Value::Object(obj))
}

/// `kubectl auth can-i`'s question: `spec.resourceAttributes`.
fn self_subject_access_review(raw: &[u8]) -> Option<Value> {
    let mut attributes = Map::new();
    for (n, f) in fields(raw)? {
        let (2, Field::Bytes(spec)) = (n, f) else {
            continue;
        };
        for (m, g) in fields(spec)? {
            let (1, Field::Bytes(ra)) = (m, g) else {
                continue;
            };
            for (k, h) in fields(ra)? {
                let Field::Bytes(b) = h else { continue };
                let name = match k {
                    1 => "namespace",
                    2 => "verb",
                    3 => "group",
                    4 => "version",
                    5 => "resource",
                    6 => "subresource",
                    7 => "name",
                    _ => continue,
                };
                attributes.insert(name.into(), string(b));
            }
        }
    }
    Some(json!({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": attributes},
    }))
}
