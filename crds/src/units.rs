//! Durations and byte sizes as users write them in manifests (`"5s"`, `"1h30m"`, `"512Mi"`).
//!
//! Both keep the text the user wrote, so a resource read back and applied again is unchanged,
//! and both carry a schema pattern so that a typo is rejected at admission, not discovered by a
//! reconciler later.

use std::{borrow::Cow, fmt, str::FromStr};

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// The schema pattern of a duration: Go's `time.ParseDuration` format without a sign.
pub const DURATION_PATTERN: &str = r"^(0|([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+)$";
/// The schema pattern of a byte size: an integer with an optional SI or IEC suffix.
pub const BYTE_SIZE_PATTERN: &str = r"^[0-9]+(B|K|KB|Ki|KiB|M|MB|Mi|MiB|G|GB|Gi|GiB|T|TB|Ti|TiB)?$";

/// A non-negative duration in Go's format (`300ms`, `5s`, `1h30m`).
#[derive(Clone, PartialEq, Eq)]
pub struct Duration {
    text: String,
    value: std::time::Duration,
}

/// Why a duration or a byte size could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UnitError {
    /// The text is not a duration.
    #[error(
        "invalid duration {text:?}: expected a number with a unit (ns, us, ms, s, m, h), such as \"5s\" or \"1h30m\""
    )]
    Duration {
        /// What was given.
        text: String,
    },
    /// The text is not a byte size.
    #[error(
        "invalid size {text:?}: expected a whole number of bytes with an optional unit (K, M, G, T, KB, MB, GB, TB, Ki, Mi, Gi, Ti), such as \"512Mi\""
    )]
    ByteSize {
        /// What was given.
        text: String,
    },
}

impl Duration {
    /// The duration as a standard library value.
    pub fn get(&self) -> std::time::Duration {
        self.value
    }

    /// The text the user wrote.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// A duration of whole seconds.
    pub fn from_secs(secs: u64) -> Self {
        Self {
            text: format!("{secs}s"),
            value: std::time::Duration::from_secs(secs),
        }
    }
}

impl FromStr for Duration {
    type Err = UnitError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = || UnitError::Duration {
            text: text.to_owned(),
        };
        if text.is_empty() || text.starts_with(['-', '+']) {
            return Err(err());
        }
        let parsed: kube::core::Duration = text.parse().map_err(|_| err())?;
        Ok(Self {
            text: text.to_owned(),
            value: parsed.into(),
        })
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Duration({})", self.text)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(de::Error::custom)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "pattern": DURATION_PATTERN })
    }
}

/// A number of bytes, written as an integer with an optional unit (`1048576`, `512Mi`, `1GB`).
#[derive(Clone, PartialEq, Eq)]
pub struct ByteSize {
    text: String,
    value: u64,
}

impl ByteSize {
    /// The size in bytes.
    pub fn bytes(&self) -> u64 {
        self.value
    }

    /// The text the user wrote.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl FromStr for ByteSize {
    type Err = UnitError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = || UnitError::ByteSize {
            text: text.to_owned(),
        };
        let digits = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        if digits == 0 {
            return Err(err());
        }
        let (number, unit) = text.split_at(digits);
        let number: u64 = number.parse().map_err(|_| err())?;
        let multiplier: u64 = match unit {
            "" | "B" => 1,
            "K" | "KB" => 1_000,
            "M" | "MB" => 1_000_000,
            "G" | "GB" => 1_000_000_000,
            "T" | "TB" => 1_000_000_000_000,
            "Ki" | "KiB" => 1 << 10,
            "Mi" | "MiB" => 1 << 20,
            "Gi" | "GiB" => 1 << 30,
            "Ti" | "TiB" => 1 << 40,
            _ => return Err(err()),
        };
        let value = number.checked_mul(multiplier).ok_or_else(err)?;
        Ok(Self {
            text: text.to_owned(),
            value,
        })
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ByteSize({})", self.text)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Accept a YAML integer as well as a string, as `maxBytes: 1048576` reads naturally.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Number(n) => n.to_string(),
            Raw::Text(t) => t,
        };
        text.parse().map_err(de::Error::custom)
    }
}

impl JsonSchema for ByteSize {
    fn schema_name() -> Cow<'static, str> {
        "ByteSize".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        // Int-or-string, like a Kubernetes quantity, so that `maxBytes: 1048576` is accepted; the
        // API server applies the pattern to strings only.
        json_schema!({
            "x-kubernetes-int-or-string": true,
            "pattern": BYTE_SIZE_PATTERN
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_go() {
        assert_eq!("5s".parse::<Duration>().unwrap().get().as_secs(), 5);
        assert_eq!("1h30m".parse::<Duration>().unwrap().get().as_secs(), 5400);
        assert_eq!("250ms".parse::<Duration>().unwrap().get().as_millis(), 250);
        assert!("5".parse::<Duration>().is_err());
        assert!("-5s".parse::<Duration>().is_err());
        assert!("5 seconds".parse::<Duration>().is_err());
        assert!("".parse::<Duration>().is_err());
    }

    #[test]
    fn byte_sizes_parse_si_and_iec() {
        assert_eq!("512Mi".parse::<ByteSize>().unwrap().bytes(), 512 << 20);
        assert_eq!("1GB".parse::<ByteSize>().unwrap().bytes(), 1_000_000_000);
        assert_eq!("1024".parse::<ByteSize>().unwrap().bytes(), 1024);
        assert!("1.5G".parse::<ByteSize>().is_err());
        assert!("12XB".parse::<ByteSize>().is_err());
        let from_int: ByteSize = serde_json::from_str("2048").unwrap();
        assert_eq!(from_int.bytes(), 2048);
    }

    #[test]
    fn text_is_kept_on_round_trip() {
        let d: Duration = serde_json::from_str("\"1h30m\"").unwrap();
        assert_eq!(serde_json::to_string(&d).unwrap(), "\"1h30m\"");
    }
}
