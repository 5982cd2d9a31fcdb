//! Server-side apply that writes only when something would change.
//!
//! Every child object is read first and applied (force, field manager `jetflow-operator`) only
//! when the desired object is not already contained in the live one. So a reconcile of a
//! Pipeline whose objects are as desired makes no writes at all, and an object edited by hand
//! in a field the operator owns is set back. Fields the operator does not set (defaults filled
//! in by the API server, fields other managers own) never count as a difference.

use std::fmt::Debug;

use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::{Error, FIELD_MANAGER, Result};

/// What [`patch_apply`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The object did not exist and was created.
    Created,
    /// The object existed and differed; it was applied.
    Updated,
    /// The object was as desired; nothing was written.
    Unchanged,
}

/// Whether every field set in `desired` has the same value in `live`: objects by key, arrays
/// element by element (same length), scalars by equality. The values of `requests` and
/// `limits` are resource quantities, which the API server stores in canonical form (`1000m`
/// comes back as `1`, `0.5Gi` as `512Mi`): those compare by the amount they stand for.
pub fn contains(live: &Value, desired: &Value) -> bool {
    contains_in(live, desired, false)
}

fn contains_in(live: &Value, desired: &Value, quantities: bool) -> bool {
    match (live, desired) {
        (Value::Object(l), Value::Object(d)) => d.iter().all(|(k, dv)| {
            dv.is_null()
                || l.get(k).is_some_and(|lv| {
                    // The entries of a `requests` or `limits` map are quantities.
                    contains_in(
                        lv,
                        dv,
                        quantities || matches!(k.as_str(), "requests" | "limits"),
                    )
                })
        }),
        (Value::Array(l), Value::Array(d)) => {
            l.len() == d.len() && l.iter().zip(d).all(|(lv, dv)| contains_in(lv, dv, false))
        }
        (Value::String(l), Value::String(d)) if quantities && l != d => {
            match (nano_units(l), nano_units(d)) {
                (Some(l), Some(d)) => l == d,
                _ => false,
            }
        }
        _ => live == desired,
    }
}

/// The amount a Kubernetes resource quantity (`<number><suffix>`, suffix one of `Ki Mi Gi Ti
/// Pi Ei`, `n u m k M G T P E`, or an exponent `e<n>`) stands for, in billionths, rounded up
/// as the API server rounds; `None` when `text` is not a quantity or is too large to count.
pub fn nano_units(text: &str) -> Option<i128> {
    let (sign, rest) = match text.as_bytes().first()? {
        b'-' => (-1, &text[1..]),
        b'+' => (1, &text[1..]),
        _ => (1, text),
    };
    let number_end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(number_end);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() || fraction.contains('.') {
        return None;
    }
    // (power of 2, power of 10) the suffix multiplies by.
    let (two, ten): (u32, i32) = match suffix {
        "Ki" => (10, 0),
        "Mi" => (20, 0),
        "Gi" => (30, 0),
        "Ti" => (40, 0),
        "Pi" => (50, 0),
        "Ei" => (60, 0),
        "n" => (0, -9),
        "u" => (0, -6),
        "m" => (0, -3),
        "" => (0, 0),
        "k" => (0, 3),
        "M" => (0, 6),
        "G" => (0, 9),
        "T" => (0, 12),
        "P" => (0, 15),
        "E" => (0, 18),
        exponent => {
            let digits = exponent
                .strip_prefix('e')
                .or_else(|| exponent.strip_prefix('E'))?;
            (0, digits.parse().ok()?)
        }
    };
    // digits * 10^(ten - fraction digits + 9) * 2^two, exactly, then rounded up.
    let mut digits: i128 = 0;
    for c in whole.chars().chain(fraction.chars()) {
        digits = digits
            .checked_mul(10)?
            .checked_add(i128::from(c.to_digit(10)?))?;
    }
    digits = digits.checked_mul(1i128.checked_shl(two)?)?;
    let scale = ten
        .checked_add(9)?
        .checked_sub(i32::try_from(fraction.len()).ok()?)?;
    let value = if scale >= 0 {
        digits.checked_mul(10i128.checked_pow(scale.unsigned_abs())?)?
    } else {
        let divisor = 10i128
            .checked_pow(scale.unsigned_abs())
            .unwrap_or(i128::MAX);
        let rounded_down = digits / divisor;
        rounded_down + i128::from(rounded_down * divisor != digits)
    };
    Some(sign * value)
}

/// Reads the object `desired` names, and applies `desired` when the live object lacks any of
/// its fields. Returns the outcome and the live object afterwards, and the one before (if any).
pub async fn patch_apply<K>(api: &Api<K>, desired: &K, kind: &'static str) -> Result<Applied<K>>
where
    K: Resource + Clone + Serialize + DeserializeOwned + Debug,
    K::DynamicType: Default,
{
    let name = desired.name_any();
    let before = api.get_opt(&name).await.map_err(|source| Error::Read {
        kind,
        name: name.clone(),
        source,
    })?;
    let desired_value = to_value(desired, kind)?;
    if let Some(live) = &before
        && contains(&to_value(live, kind)?, &desired_value)
    {
        return Ok(Applied {
            outcome: Outcome::Unchanged,
            object: live.clone(),
            before,
        });
    }
    let object = api
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&desired_value),
        )
        .await
        .map_err(|source| Error::Apply {
            kind,
            name: name.clone(),
            source,
        })?;
    let outcome = if before.is_some() {
        Outcome::Updated
    } else {
        Outcome::Created
    };
    Ok(Applied {
        outcome,
        object,
        before,
    })
}

/// The result of [`patch_apply`].
#[derive(Debug)]
pub struct Applied<K> {
    /// What was done.
    pub outcome: Outcome,
    /// The live object afterwards.
    pub object: K,
    /// The live object before, if it existed.
    pub before: Option<K>,
}

fn to_value<K: Serialize>(object: &K, kind: &'static str) -> Result<Value> {
    serde_json::to_value(object).map_err(|source| Error::Encode {
        what: kind,
        source: Box::new(source),
    })
}

/// Writes a resource's status by server-side apply, only when it differs from `current`, so
/// that a resync which finds nothing new writes nothing.
pub(crate) async fn publish_status<K, S>(
    api: &Api<K>,
    obj: &K,
    current: Option<&S>,
    status: S,
    kind: &'static str,
) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
    S: Serialize + PartialEq,
{
    if current == Some(&status) {
        return Ok(());
    }
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        &obj.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(|source| Error::PublishStatus {
        kind,
        name: obj.name_any(),
        source,
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_added_by_the_server_are_not_differences() {
        let live = json!({"spec": {"replicas": 2, "strategy": {"type": "RollingUpdate"}}});
        assert!(contains(&live, &json!({"spec": {"replicas": 2}})));
        assert!(!contains(&live, &json!({"spec": {"replicas": 3}})));
        assert!(!contains(&live, &json!({"spec": {"paused": true}})));
    }

    #[test]
    fn quantities_compare_by_amount() {
        for (a, b) in [
            ("1000m", "1"),
            ("0.5", "500m"),
            ("1Gi", "1024Mi"),
            ("0.5Gi", "512Mi"),
            ("1e3", "1k"),
            ("1.5k", "1500"),
            ("100n", "0.0000001"),
            ("+2", "2"),
        ] {
            assert_eq!(nano_units(a), nano_units(b), "{a} = {b}");
            assert!(nano_units(a).is_some(), "{a}");
        }
        assert_ne!(nano_units("1k"), nano_units("1Ki"));
        assert_eq!(nano_units("0.1n"), Some(1), "rounded up to the nano unit");
        for bad in ["", "m", "1.2.3", "1Xi", "abc", "1e", "1e99999"] {
            assert_eq!(nano_units(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn resource_quantities_in_canonical_form_are_not_differences() {
        let live = json!({"resources": {"requests": {"cpu": "1", "memory": "512Mi"},
                                        "limits": {"cpu": "2"}}});
        let desired = json!({"resources": {"requests": {"cpu": "1000m", "memory": "0.5Gi"},
                                           "limits": {"cpu": "2000m"}}});
        assert!(contains(&live, &desired));
        let more = json!({"resources": {"limits": {"cpu": "2500m"}}});
        assert!(!contains(&live, &more));
        // Elsewhere, strings compare as strings: an environment variable "1000m" is not "1".
        let env = json!({"env": [{"name": "CPU", "value": "1"}]});
        assert!(!contains(
            &env,
            &json!({"env": [{"name": "CPU", "value": "1000m"}]})
        ));
    }

    #[test]
    fn arrays_compare_element_by_element() {
        let live = json!({"a": [{"name": "x", "value": "1", "extra": true}]});
        assert!(contains(
            &live,
            &json!({"a": [{"name": "x", "value": "1"}]})
        ));
        assert!(!contains(
            &live,
            &json!({"a": [{"name": "x", "value": "2"}]})
        ));
        assert!(!contains(&live, &json!({"a": []})));
    }
}
