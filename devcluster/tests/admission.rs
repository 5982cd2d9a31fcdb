//! CRD admission against jetflow's real CRDs: the examples are admitted, the wrong manifests of
//! crds/tests/invalid are refused naming the rule's message and field, defaults are filled in,
//! unknown fields are pruned (or refused under strict), transition rules see `oldSelf`, and
//! the Status and its messages are worded as kube-apiserver words them.

use std::path::{Path, PathBuf};

use jetflow_devcluster::admission::{CrdAdmission, Invalid, Request};
use serde_json::{Value, json};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn yaml_docs(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| <Value as serde::Deserialize>::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

fn admission() -> CrdAdmission {
    let dir = root().join("crds/generated");
    let mut crds = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        crds.extend(yaml_docs(&entry.unwrap().path()));
    }
    CrdAdmission::new(crds)
}

fn resource(doc: &Value) -> &'static str {
    match doc["kind"].as_str() {
        Some("Pipeline") => "pipelines",
        Some("Stream") => "streams",
        other => panic!("not a jetflow kind: {other:?}"),
    }
}

fn request<'a>(doc: &Value, old: Option<&'a Value>) -> Request<'a> {
    Request {
        group: "jetflow.io",
        version: "v1alpha1",
        resource: resource(doc),
        subresource: None,
        old,
        strict: false,
    }
}

fn admit(doc: &Value) -> Result<(Value, Vec<String>), Invalid> {
    let mut object = doc.clone();
    let warnings = admission().admit(&request(doc, None), &mut object)?;
    Ok((object, warnings))
}

fn messages(invalid: &Invalid) -> Vec<String> {
    invalid
        .causes
        .iter()
        .map(|c| format!("{}: {}", c.field, c.message))
        .collect()
}

fn pipeline(spec: Value) -> Value {
    json!({"apiVersion": "jetflow.io/v1alpha1", "kind": "Pipeline", "metadata": {"name": "bad", "namespace": "shop"}, "spec": spec})
}

fn minimal() -> Value {
    pipeline(
        json!({"source": {"jetstream": {"stream": "orders"}}, "sink": {"jetstream": {"stream": "copy", "subject": "copy.{{subject}}"}}}),
    )
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_example_is_admitted_without_warnings() {
    let mut admitted = 0;
    for path in yaml_files(&root().join("examples")) {
        for doc in yaml_docs(&path) {
            if !doc["apiVersion"]
                .as_str()
                .is_some_and(|a| a.starts_with("jetflow.io/"))
            {
                continue;
            }
            let (_, warnings) =
                admit(&doc).unwrap_or_else(|e| panic!("{}: {:?}", path.display(), messages(&e)));
            assert!(warnings.is_empty(), "{}: {warnings:?}", path.display());
            admitted += 1;
        }
    }
    assert!(admitted >= 9, "only {admitted} examples");
}

/// Each file starts with `# field: <path>` and `# cel: <message part>`; where the CRD has a
/// rule (`cel:` not `none`) the refusal carries that message on the rule's field, which is
/// the header's field or one of its parents. `cel: none` files are refused by the schema when
/// it can express the rule (a duration pattern) and otherwise admitted, as the real API server
/// admits them (the operator's validation refuses them).
#[test]
fn wrong_manifests_are_refused_with_the_rules_message_and_field() {
    let files = yaml_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds/tests/invalid"));
    assert!(files.len() >= 6);
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let header = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("# {key}: ")))
                .unwrap()
                .to_owned()
        };
        let (field, rule) = (header("field"), header("cel"));
        let doc = yaml_docs(&path).into_iter().next().unwrap();
        match (admit(&doc), rule.as_str()) {
            (Err(invalid), "none") => {
                assert!(
                    invalid.causes.iter().any(|c| c.field == field),
                    "{}: {:?}",
                    path.display(),
                    messages(&invalid)
                );
            }
            // Rules the schema cannot express (a template's placeholders, wildcard overlap of
            // filters, outputs inside the source's subjects) are the operator's validation's, reported in SpecValid.
            (Ok(_), "none") => assert!(
                path.ends_with("bad-sink-template.yaml")
                    || path.ends_with("overlapping-filters.yaml")
                    || path.ends_with("sink-subject-read-again.yaml"),
                "{} admitted",
                path.display()
            ),
            (Err(invalid), rule) => {
                let cause = invalid
                    .causes
                    .iter()
                    .find(|c| c.message.contains(rule))
                    .unwrap_or_else(|| {
                        panic!(
                            "{}: no cause says {rule:?}: {:?}",
                            path.display(),
                            messages(&invalid)
                        )
                    });
                assert!(
                    field.starts_with(&cause.field),
                    "{}: {rule:?} on {} not {field}",
                    path.display(),
                    cause.field
                );
                assert_eq!(cause.reason, "FieldValueInvalid");
                assert!(
                    ["object", "integer", "array"].iter().any(|t| cause
                        .message
                        .starts_with(&format!("Invalid value: \"{t}\": "))),
                    "{}: {}",
                    path.display(),
                    cause.message
                );
            }
            (Ok(_), rule) => panic!("{}: admitted despite {rule:?}", path.display()),
        }
    }
}

#[test]
fn a_failed_rule_becomes_the_status_kubectl_prints() {
    let doc = pipeline(
        json!({"source": {"core": {"subjects": ["a.b"]}, "jetstream": {"stream": "s"}}, "sink": {"core": {"subject": "out"}}}),
    );
    let invalid = admit(&doc).unwrap_err();
    assert_eq!(invalid.code(), 422);
    assert_eq!(
        invalid.to_status(),
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "Pipeline.jetflow.io \"bad\" is invalid: spec.source: Invalid value: \"object\": source: set exactly one of source.core and source.jetstream",
            "reason": "Invalid",
            "details": {"name": "bad", "group": "jetflow.io", "kind": "Pipeline", "causes": [{
                "reason": "FieldValueInvalid",
                "message": "Invalid value: \"object\": source: set exactly one of source.core and source.jetstream",
                "field": "spec.source"}]},
            "code": 422,
        })
    );
}

#[test]
fn schema_errors_are_worded_as_the_api_server_words_them() {
    let cases: Vec<(Value, Vec<&str>)> = vec![
        (
            pipeline(json!({"sink": {"jetstream": {"stream": "copy"}}})),
            vec![
                "spec.source: Required value",
                "<nil>: Invalid value: \"null\": some validation rules were not checked because the object was invalid; correct the existing errors to complete validation",
            ],
        ),
        (
            {
                let mut p = minimal();
                p["spec"]["errors"] = json!({"policy": "Foo"});
                p
            },
            vec![
                "spec.errors.policy: Unsupported value: \"Foo\": supported values: \"Dlq\", \"Skip\", \"Stop\"",
                "<nil>: Invalid value: \"null\": some validation rules were not checked because the object was invalid; correct the existing errors to complete validation",
            ],
        ),
        (
            {
                let mut p = minimal();
                p["spec"]["parallelism"] = json!("three");
                p
            },
            vec![
                "spec.parallelism: Invalid value: \"string\": spec.parallelism in body must be of type integer: \"string\"",
                "<nil>: Invalid value: \"null\": some validation rules were not checked because the object was invalid; correct the existing errors to complete validation",
            ],
        ),
        (
            {
                let mut p = minimal();
                p["spec"]["parallelism"] = json!(-1);
                p
            },
            vec!["spec.parallelism: Invalid value: \"integer\": parallelism must be at least 1"],
        ),
        (
            {
                let mut p = minimal();
                p["spec"]["sink"]["jetstream"]["maxPending"] = json!(0);
                p
            },
            vec![
                "spec.sink.jetstream.maxPending: Invalid value: 0: spec.sink.jetstream.maxPending in body should be greater than or equal to 1",
            ],
        ),
        (
            {
                let mut p = minimal();
                p["spec"]["source"]["jetstream"]["batchSize"] = json!(20000);
                p
            },
            vec![
                "spec.source.jetstream.batchSize: Invalid value: 20000: spec.source.jetstream.batchSize in body should be less than or equal to 10000",
            ],
        ),
        (
            {
                let mut p = minimal();
                p["spec"]["checkpoint"] = json!({"interval": "5 seconds"});
                p
            },
            vec![
                "spec.checkpoint.interval: Invalid value: \"5 seconds\": spec.checkpoint.interval in body should match '^(0|([0-9]+(\\.[0-9]+)?(ns|us|µs|ms|s|m|h))+)$'",
            ],
        ),
        (
            {
                let mut p = minimal();
                p["spec"]["source"]["bound"] = json!({"time": "yesterday"});
                p
            },
            vec![
                "spec.source.bound.time: Invalid value: \"yesterday\": spec.source.bound.time in body must be of type date-time: \"yesterday\"",
                "<nil>: Invalid value: \"null\": some validation rules were not checked because the object was invalid; correct the existing errors to complete validation",
            ],
        ),
        (
            {
                let mut p = minimal();
                p["spec"]["source"]["jetstream"]["stream"] = json!("");
                p
            },
            vec![
                "spec.source.jetstream.stream: Invalid value: \"\": spec.source.jetstream.stream in body should be at least 1 chars long",
            ],
        ),
        (
            {
                let mut p = minimal();
                p["spec"]["source"] = json!({"core": {"subjects": []}});
                p
            },
            vec![
                "spec.source.core.subjects: Invalid value: 0: spec.source.core.subjects in body should have at least 1 items",
            ],
        ),
        (
            {
                let mut p = minimal();
                p["spec"]["steps"] = json!([{"filter": ".a"}, {"map": "{}", "setSubject": "x"}]);
                p
            },
            vec![
                "spec.steps[1]: Invalid value: \"object\": each step sets exactly one of filter, map, setSubject, setHeaders and dropHeaders",
            ],
        ),
    ];
    for (doc, expected) in cases {
        let invalid = admit(&doc).expect_err(&doc.to_string());
        assert_eq!(messages(&invalid), expected);
    }
    let stream = json!({"apiVersion": "jetflow.io/v1alpha1", "kind": "Stream", "metadata": {"name": "s"},
        "spec": {"subjects": ["a"], "name": "x".repeat(300)}});
    let invalid = admit(&stream).unwrap_err();
    assert_eq!(
        messages(&invalid)[0],
        "spec.name: Too long: may not be more than 255 bytes"
    );
    assert_eq!(invalid.causes[0].reason, "FieldValueTooLong");
}

#[test]
fn several_causes_are_listed_in_brackets() {
    let doc = pipeline(
        json!({"parallelism": 0, "source": {"core": {"subjects": ["a"]}, "bound": {"sequence": 5}}, "sink": {"core": {"subject": "b.{{subject}}"}}}),
    );
    let status = admit(&doc).unwrap_err().to_status();
    assert_eq!(
        status["message"],
        "Pipeline.jetflow.io \"bad\" is invalid: [\
        spec.parallelism: Invalid value: \"integer\": parallelism must be at least 1, \
        spec.source: Invalid value: \"object\": source.bound is only allowed with a JetStream source (source.jetstream)]"
    );
}

#[test]
fn defaults_are_filled_in() {
    let (object, _) = admit(&minimal()).unwrap();
    let spec = &object["spec"];
    assert_eq!(spec["parallelism"], 1);
    assert_eq!(spec["suspend"], false);
    assert_eq!(spec["checkpoint"], json!({"interval": "5s"}));
    assert_eq!(spec["errors"], json!({"policy": "Dlq"}));
    assert_eq!(spec["source"]["jetstream"]["start"], json!({"from": "All"}));
    assert_eq!(spec["source"]["jetstream"]["batchSize"], 500);
    assert_eq!(spec["sink"]["jetstream"]["maxPending"], 1024);
    // The sink's subject defaults to the message's own, as a setSubject step set it.
    let mut set = minimal();
    set["spec"]["steps"] = json!([{"setSubject": "copy.{{subject}}"}]);
    set["spec"]["sink"]["jetstream"]
        .as_object_mut()
        .unwrap()
        .remove("subject");
    let (object, _) = admit(&set).unwrap();
    assert_eq!(
        object["spec"]["sink"]["jetstream"]["subject"],
        "{{subject}}"
    );
    let stream = json!({"apiVersion": "jetflow.io/v1alpha1", "kind": "Stream", "metadata": {"name": "s"}, "spec": {"subjects": ["a.>"]}});
    let (object, _) = admit(&stream).unwrap();
    assert_eq!(object["spec"]["deletionPolicy"], "Retain");
    assert_eq!(object["spec"]["replicas"], 1);
}

#[test]
fn unknown_fields_are_pruned_with_a_warning_or_refused_when_strict() {
    let mut doc = minimal();
    doc["spec"]["paralelism"] = json!(2);
    doc["spec"]["source"]["jetstream"]["strem"] = json!("x");
    let (object, warnings) = admit(&doc).unwrap();
    assert_eq!(
        warnings,
        vec![
            "unknown field \"spec.paralelism\"",
            "unknown field \"spec.source.jetstream.strem\""
        ]
    );
    assert!(object["spec"].get("paralelism").is_none());

    let mut object = doc.clone();
    let strict = Request {
        strict: true,
        ..request(&doc, None)
    };
    let invalid = admission().admit(&strict, &mut object).unwrap_err();
    assert_eq!(invalid.code(), 400);
    assert_eq!(
        invalid.to_status(),
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "Pipeline in version \"v1alpha1\" cannot be handled as a Pipeline: strict decoding error: unknown field \"spec.paralelism\", unknown field \"spec.source.jetstream.strem\"",
            "reason": "BadRequest", "code": 400,
        })
    );
    assert_eq!(
        admission().undeclared_fields("jetflow.io", "v1alpha1", "pipelines", &doc),
        vec![".spec.paralelism", ".spec.source.jetstream.strem"]
    );
}

#[test]
fn a_transition_rule_sees_the_old_object() {
    let stream = |name: &str| {
        json!({"apiVersion": "jetflow.io/v1alpha1", "kind": "Stream", "metadata": {"name": "s"},
        "spec": {"subjects": ["a"], "name": name}})
    };
    let (old, _) = admit(&stream("ORDERS")).unwrap();
    let adm = admission();
    let mut same = stream("ORDERS");
    same["spec"]["subjects"] = json!(["a", "b"]);
    adm.admit(&request(&same, Some(&old)), &mut same).unwrap();
    let mut renamed = stream("ORDERS2");
    let invalid = adm
        .admit(&request(&renamed.clone(), Some(&old)), &mut renamed)
        .unwrap_err();
    assert_eq!(
        messages(&invalid),
        vec!["spec.name: Invalid value: \"string\": name cannot be changed"]
    );
}

#[test]
fn status_is_kept_on_main_writes_and_only_status_changes_on_status_writes() {
    let adm = admission();
    let (mut old, _) = admit(&minimal()).unwrap();
    old["status"] = json!({"phase": "Running", "readyReplicas": 1, "replicas": 1});

    let mut main = old.clone();
    main["spec"]["parallelism"] = json!(3);
    main["status"] = json!({"phase": "Failed"});
    adm.admit(&request(&main.clone(), Some(&old)), &mut main)
        .unwrap();
    assert_eq!(main["status"]["phase"], "Running");
    assert_eq!(main["spec"]["parallelism"], 3);

    let mut status = old.clone();
    status["spec"]["parallelism"] = json!(7);
    status["status"]["phase"] = json!("Suspended");
    let req = Request {
        subresource: Some("status"),
        ..request(&old, Some(&old))
    };
    adm.admit(&req, &mut status).unwrap();
    assert_eq!(status["status"]["phase"], "Suspended");
    assert_eq!(status["spec"]["parallelism"], 1);

    let mut bad = old.clone();
    bad["status"]["phase"] = json!("Bogus");
    let invalid = adm.admit(&req, &mut bad).unwrap_err();
    assert_eq!(
        messages(&invalid)[0],
        "status.phase: Unsupported value: \"Bogus\": supported values: \"Pending\", \"Running\", \"Suspended\", \"Succeeded\", \"Failed\""
    );
}

#[test]
fn unchanged_invalid_values_ratchet_on_update() {
    let adm = admission();
    let mut old = minimal();
    old["spec"]["parallelism"] = json!(0);
    let mut update = old.clone();
    update["spec"]["suspend"] = json!(true);
    let warnings = adm
        .admit(&request(&update.clone(), Some(&old)), &mut update)
        .unwrap();
    assert_eq!(
        warnings,
        vec!["spec.parallelism: Invalid value: \"integer\": parallelism must be at least 1"]
    );
}

#[test]
fn resources_without_a_crd_pass_unchanged() {
    let mut cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"a": "b"}, "extra": 1});
    let before = cm.clone();
    let req = Request {
        group: "",
        version: "v1",
        resource: "configmaps",
        subresource: None,
        old: None,
        strict: true,
    };
    assert_eq!(
        admission().admit(&req, &mut cm).unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(cm, before);
}

/// A CRD of its own for what jetflow's CRDs do not use: `messageExpression`, `fieldPath`,
/// `reason`, int-or-string, nullable, unique items, property counts, map lists with
/// transition rules, and preserved unknown fields.
fn widget_admission() -> CrdAdmission {
    let schema = json!({"type": "object", "properties": {"spec": {"type": "object",
    "x-kubernetes-validations": [
        {"rule": "self.replicas <= self.max", "messageExpression": "'replicas ' + string(self.replicas) + ' above max ' + string(self.max)", "fieldPath": ".replicas"},
        {"rule": "!has(self.forbidden)", "message": "forbidden is not allowed", "reason": "FieldValueForbidden", "fieldPath": ".forbidden"},
        {"rule": "self.size != 'huge'"}
    ],
    "properties": {
        "replicas": {"type": "integer"},
        "max": {"type": "integer", "default": 3},
        "forbidden": {"type": "string"},
        "size": {"x-kubernetes-int-or-string": true, "default": "small"},
        "note": {"type": "string", "nullable": true},
        "tags": {"type": "array", "uniqueItems": true, "maxItems": 2, "items": {"type": "string"}},
        "labels": {"type": "object", "maxProperties": 1, "additionalProperties": {"type": "string"}},
        "ports": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
            "items": {"type": "object", "required": ["name"], "properties": {
                "name": {"type": "string"},
                "port": {"type": "integer", "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "port is immutable"}]}}}},
        "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
    }}}});
    CrdAdmission::new(vec![json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
            "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": schema}}]}})])
}

fn widget(spec: Value) -> Value {
    json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": spec})
}

fn admit_widget(spec: Value, old: Option<&Value>) -> Result<Value, Vec<String>> {
    let mut object = widget(spec);
    let req = Request {
        group: "example.com",
        version: "v1",
        resource: "widgets",
        subresource: None,
        old,
        strict: false,
    };
    widget_admission()
        .admit(&req, &mut object)
        .map(|_| object)
        .map_err(|e| messages(&e))
}

#[test]
fn rules_with_message_expressions_field_paths_and_reasons() {
    let ok = admit_widget(
        json!({"replicas": 2, "size": 5, "note": null, "extra": {"free": {"x": 1}}}),
        None,
    )
    .unwrap();
    assert_eq!(ok["spec"]["max"], 3);
    assert_eq!(ok["spec"]["note"], Value::Null);
    assert_eq!(ok["spec"]["extra"], json!({"free": {"x": 1}}));
    assert_eq!(
        admit_widget(
            json!({"replicas": 5, "forbidden": "x", "size": "huge"}),
            None
        )
        .unwrap_err(),
        vec![
            "spec.replicas: Invalid value: \"object\": replicas 5 above max 3",
            "spec.forbidden: Forbidden: forbidden is not allowed",
            "spec: Invalid value: \"object\": failed rule: self.size != 'huge'",
        ]
    );
    assert_eq!(
        admit_widget(
            json!({"size": true, "tags": ["a", "a", "b"], "labels": {"a": "1", "b": "2"}}),
            None
        )
        .unwrap_err(),
        vec![
            "spec.labels: Too many: 2: must have at most 1 items",
            "spec.size: Invalid value: \"boolean\": spec.size in body must be of type integer,string: \"boolean\"",
            "spec.tags: Too many: 3: must have at most 2 items",
            "spec.tags: Invalid value: \"\": spec.tags in body shouldn't contain duplicates",
            "<nil>: Invalid value: \"null\": some validation rules were not checked because the object was invalid; correct the existing errors to complete validation",
        ]
    );
    assert_eq!(
        admit_widget(json!({}), None).unwrap_err(),
        vec![
            "spec: Invalid value: \"object\": no such key: replicas evaluating rule: self.replicas <= self.max"
        ]
    );
}

#[test]
fn transition_rules_match_map_list_items_by_key() {
    let old = admit_widget(
        json!({"replicas": 1, "ports": [{"name": "http", "port": 80}, {"name": "grpc", "port": 90}]}),
        None,
    )
    .unwrap();
    admit_widget(json!({"replicas": 1, "ports": [{"name": "grpc", "port": 90}, {"name": "http", "port": 80}, {"name": "new", "port": 1}]}), Some(&old)).unwrap();
    assert_eq!(
        admit_widget(
            json!({"replicas": 1, "ports": [{"name": "grpc", "port": 91}]}),
            Some(&old)
        )
        .unwrap_err(),
        vec!["spec.ports[0].port: Invalid value: \"integer\": port is immutable"]
    );
    assert_eq!(
        admit_widget(json!({"replicas": 1, "ports": [{"port": 1}]}), None).unwrap_err()[0],
        "spec.ports[0].name: Required value"
    );
}

#[test]
fn a_new_object_needs_a_dns_subdomain_name() {
    let mut doc = minimal();
    doc["metadata"]["name"] = json!("Bad_Name");
    assert_eq!(
        messages(&admit(&doc).unwrap_err()),
        vec![
            "metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
        ]
    );
}

#[test]
fn null_fields_are_absent_for_the_rules() {
    let doc = pipeline(json!({
        "connection": {"url": "nats://nats:4222", "token": null, "creds": {"name": "n", "key": "k"}},
        "source": {"core": {"subjects": ["a"]}, "jetstream": null},
        "sink": {"core": {"subject": "out"}}}));
    let (object, _) = admit(&doc).unwrap_or_else(|e| panic!("{:?}", messages(&e)));
    assert_eq!(
        object["spec"]["source"]["jetstream"],
        Value::Null,
        "kept: it is nullable"
    );
}

#[test]
fn a_comma_separated_server_list_is_admitted_and_an_entry_without_scheme_refused() {
    let mut list = minimal();
    list["spec"]["connection"] = json!({"url": "nats://a:4222, nats://b:4222,tls://c:4443"});
    admit(&list).unwrap_or_else(|e| panic!("{:?}", messages(&e)));
    let mut bad = minimal();
    bad["spec"]["connection"] = json!({"url": "nats://a:4222,b:4222"});
    let invalid = admit(&bad).unwrap_err();
    assert!(
        invalid
            .causes
            .iter()
            .any(|c| c.field == "spec.connection.url"),
        "{:?}",
        messages(&invalid)
    );
}
