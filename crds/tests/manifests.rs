//! Manifests against the API: every example parses and validates, the committed CRD YAML is
//! what the types generate, and wrong manifests are rejected, both by the Rust-side validation
//! and by the CRD's own CEL rules evaluated offline, with messages that name the field.

use std::path::{Path, PathBuf};

use jetflow_crds::manifest::{self, Resource};
use jetflow_crds::validate;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The openAPIV3Schema of a committed CRD file.
fn committed_schema(file: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(root().join("crds/generated").join(file)).unwrap();
    let crd: serde_json::Value = serde_yaml_ng::from_str(&text).unwrap();
    crd.pointer("/spec/versions/0/schema/openAPIV3Schema")
        .cloned()
        .expect("CRD has a schema")
}

/// Every YAML document of a file with a jetflow kind, as untyped JSON.
fn documents(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| <serde_json::Value as serde::Deserialize>::deserialize(d).unwrap())
        .filter(|v| {
            v.get("apiVersion")
                .and_then(|a| a.as_str())
                .is_some_and(|a| a.starts_with("jetflow.io/"))
        })
        .collect()
}

fn cel(doc: &serde_json::Value) -> Result<(), String> {
    let file = match doc["kind"].as_str() {
        Some("Pipeline") => "jetflow.io_pipelines.yaml",
        Some("Stream") => "jetflow.io_streams.yaml",
        other => panic!("unexpected kind {other:?}"),
    };
    kube::core::cel::Validator::new()
        .validate(&committed_schema(file), doc, None)
        .map_err(|e| e.to_string())
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

#[test]
fn committed_crds_equal_generated() {
    for folder in jetflow_crds::crdgen::FOLDERS {
        for (name, yaml) in jetflow_crds::crdgen::files() {
            let path = root().join(folder).join(name);
            let committed = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                committed == yaml,
                "{folder}/{name} differs from the types; run `cargo run -p jetflow-crds --bin crdgen`"
            );
        }
    }
}

#[test]
fn every_example_parses_and_validates() {
    let files = yaml_files(&root().join("examples"));
    assert!(!files.is_empty(), "no examples found");
    let mut resources = 0;
    for path in files {
        let parsed = manifest::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for r in &parsed {
            let result = match r {
                Resource::Pipeline(p) => validate::pipeline(p),
                Resource::Stream(s) => validate::stream(s),
            };
            result.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
        for doc in documents(&path) {
            cel(&doc).unwrap_or_else(|e| panic!("{}: CEL: {e}", path.display()));
        }
        resources += parsed.len();
    }
    assert!(resources > 0);
}

/// Each example's outputs land in its sink stream and never come back to its source, judged
/// against the subjects of the example's own Stream documents.
#[test]
fn every_example_routes_its_outputs_into_its_sink_stream() {
    use jetflow_crds::routing::{StreamSubjects, Streams, check_streams};
    for path in yaml_files(&root().join("examples")) {
        let parsed = manifest::load(&path).unwrap();
        let streams: Vec<StreamSubjects> = parsed
            .iter()
            .filter_map(|r| match r {
                Resource::Stream(s) => StreamSubjects::of_stream(s),
                Resource::Pipeline(_) => None,
            })
            .collect();
        let find = |name: Option<&String>| name.and_then(|n| streams.iter().find(|s| &s.name == n));
        for r in &parsed {
            if let Resource::Pipeline(p) = r {
                let known = Streams {
                    source: find(p.spec.source.jetstream.as_ref().map(|s| &s.stream)),
                    sink: find(p.spec.sink.jetstream.as_ref().map(|s| &s.stream)),
                };
                let errors = check_streams(p, known);
                assert!(errors.is_empty(), "{}: {errors:?}", path.display());
            }
        }
    }
}

/// Each file in tests/invalid starts with `# field: <path>` and `# cel: <message part>` (or
/// `# cel: none` when the schema cannot express the rule) and must be rejected by both.
#[test]
fn wrong_manifests_are_rejected_naming_the_field() {
    let files = yaml_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/invalid"));
    assert!(files.len() >= 6, "expected a handful of wrong manifests");
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let header = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("# {key}: ")))
                .unwrap_or_else(|| panic!("{}: missing `# {key}:` header", path.display()))
                .to_owned()
        };
        let field = header("field");
        let cel_message = header("cel");

        let rust_error = match manifest::parse(&text) {
            Err(e) => e.to_string(),
            Ok(resources) => resources
                .iter()
                .filter_map(|r| match r {
                    Resource::Pipeline(p) => validate::pipeline(p).err(),
                    Resource::Stream(s) => validate::stream(s).err(),
                })
                .map(|e| e.to_string())
                .next()
                .unwrap_or_else(|| panic!("{}: accepted by the Rust validation", path.display())),
        };
        assert!(
            rust_error.contains(&field),
            "{}: Rust error does not name {field}: {rust_error}",
            path.display()
        );

        if cel_message != "none" {
            let docs = documents(&path);
            let errors: Vec<String> = docs.iter().filter_map(|d| cel(d).err()).collect();
            assert!(
                errors.iter().any(|e| e.contains(&cel_message)),
                "{}: CEL did not reject with {cel_message:?}: {errors:?}",
                path.display()
            );
        }
    }
}
