//! Reading manifests: a YAML file of one or more documents, as `kubectl apply -f` takes it.
//! The worker's configuration is such a file (a Pipeline manifest); examples hold a Stream and
//! Pipeline pair and sometimes a Secret. A field the resource's schema does not declare is an
//! error, as under `kubectl apply --validate=strict` ([`crate::fields`]).

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use crate::{Pipeline, Stream};

/// A jetflow resource read from a manifest.
#[derive(Clone, Debug)]
pub enum Resource {
    /// A Pipeline.
    Pipeline(Box<Pipeline>),
    /// A Stream.
    Stream(Box<Stream>),
}

/// Why a manifest could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A document is not YAML.
    #[error("document {index}: not valid YAML: {source}")]
    Yaml {
        /// 1-based document number.
        index: usize,
        /// The parse error.
        source: serde_yaml_ng::Error,
    },
    /// A document does not match its resource's schema; `field` names where.
    #[error("document {index} ({kind} {name}): {field}: {message}")]
    Field {
        /// 1-based document number.
        index: usize,
        /// The resource kind.
        kind: String,
        /// The resource name.
        name: String,
        /// Path of the offending field, such as `spec.source.jetstream.start.from`.
        field: String,
        /// What was wrong.
        message: String,
    },
    /// A document has fields its resource's schema does not declare (misspelt, or of another
    /// version), which `kubectl apply --validate=strict` refuses too.
    #[error("document {index} ({kind} {name}): {}", fields.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    UnknownFields {
        /// 1-based document number.
        index: usize,
        /// The resource kind.
        kind: String,
        /// The resource name.
        name: String,
        /// The fields, each with the nearest known one where close.
        fields: Vec<crate::fields::UnknownField>,
    },
    /// The manifest holds no Pipeline where one is needed.
    #[error("{0}: no Pipeline found (expected a document with kind: Pipeline)")]
    NoPipeline(String),
    /// The manifest holds several Pipelines where one is needed.
    #[error("{origin}: {count} Pipelines found; name one with --pipeline")]
    SeveralPipelines {
        /// The file.
        origin: String,
        /// How many.
        count: usize,
    },
}

/// Parses every jetflow document in `text`. Documents of other kinds (a Secret, a ConfigMap)
/// and empty documents are skipped.
pub fn parse(text: &str) -> Result<Vec<Resource>, ManifestError> {
    let mut resources = Vec::new();
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let index = i + 1;
        let value: serde_json::Value = serde::Deserialize::deserialize(doc)
            .map_err(|source| ManifestError::Yaml { index, source })?;
        if value.is_null() {
            continue;
        }
        let kind = value
            .get("kind")
            .and_then(|k| k.as_str())
            .unwrap_or_default()
            .to_owned();
        let api_version = value
            .get("apiVersion")
            .and_then(|k| k.as_str())
            .unwrap_or_default();
        if !api_version.starts_with(&format!("{}/", crate::GROUP)) {
            continue;
        }
        let unknown = crate::fields::unknown(&kind, &value);
        if !unknown.is_empty() {
            return Err(ManifestError::UnknownFields {
                index,
                kind,
                name: name_of(&value),
                fields: unknown,
            });
        }
        match kind.as_str() {
            "Pipeline" => resources.push(Resource::Pipeline(Box::new(typed(index, &kind, value)?))),
            "Stream" => resources.push(Resource::Stream(Box::new(typed(index, &kind, value)?))),
            _ => continue,
        }
    }
    Ok(resources)
}

fn typed<T: DeserializeOwned>(
    index: usize,
    kind: &str,
    value: serde_json::Value,
) -> Result<T, ManifestError> {
    let name = name_of(&value);
    serde_path_to_error::deserialize(value).map_err(|e| ManifestError::Field {
        index,
        kind: kind.to_owned(),
        name,
        field: e.path().to_string(),
        message: e.into_inner().to_string(),
    })
}

fn name_of(value: &serde_json::Value) -> String {
    value
        .pointer("/metadata/name")
        .and_then(|n| n.as_str())
        .unwrap_or("<unnamed>")
        .to_owned()
}

/// Reads and parses a manifest file.
pub fn load(path: &Path) -> Result<Vec<Resource>, ManifestError> {
    let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text)
}

/// The one Pipeline in a manifest file, or the one named `name`.
pub fn load_pipeline(path: &Path, name: Option<&str>) -> Result<Pipeline, ManifestError> {
    let origin = path.display().to_string();
    let mut pipelines: Vec<Pipeline> = load(path)?
        .into_iter()
        .filter_map(|r| match r {
            Resource::Pipeline(p) => Some(*p),
            Resource::Stream(_) => None,
        })
        .filter(|p| name.is_none_or(|n| p.metadata.name.as_deref() == Some(n)))
        .collect();
    match pipelines.len() {
        0 => Err(ManifestError::NoPipeline(origin)),
        1 => Ok(pipelines.remove(0)),
        count => Err(ManifestError::SeveralPipelines { origin, count }),
    }
}

/// The Streams in a manifest file.
pub fn load_streams(path: &Path) -> Result<Vec<Stream>, ManifestError> {
    Ok(load(path)?
        .into_iter()
        .filter_map(|r| match r {
            Resource::Stream(s) => Some(*s),
            Resource::Pipeline(_) => None,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_enum_value_names_the_field() {
        let text = r#"
apiVersion: jetflow.io/v1alpha1
kind: Pipeline
metadata: {name: p}
spec:
  source: {jetstream: {stream: s, start: {from: Beginning}}}
  sink: {core: {subject: out}}
"#;
        let err = parse(text).unwrap_err().to_string();
        assert!(err.contains("spec.source.jetstream.start.from"), "{err}");
        assert!(err.contains("Beginning"), "{err}");
    }

    #[test]
    fn other_kinds_are_skipped() {
        let text = "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\n---\n";
        assert!(parse(text).unwrap().is_empty());
    }
}
