//! The examples' steps compile, and the step examples behave as their comments say.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use jetflow_crds::manifest::{self, Resource};
use jetflow_steps::{FailureKind, Headers, Input, OutputHeaders, Steps, check};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

fn steps_of(file: &str) -> Steps {
    let pipeline = manifest::load_pipeline(&examples().join(file), None).unwrap();
    Steps::compile(&pipeline.spec.steps).unwrap()
}

fn apply(
    steps: &Steps,
    subject: &str,
    headers: Option<&Headers>,
    payload: &str,
    seq: u64,
) -> Result<Vec<jetflow_steps::Output>, jetflow_steps::StepFailure> {
    steps.apply(Input {
        subject,
        headers,
        payload: &Bytes::copy_from_slice(payload.as_bytes()),
        seq,
    })
}

#[test]
fn every_example_pipeline_compiles() {
    let mut pipelines = 0;
    for entry in std::fs::read_dir(examples()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        for resource in manifest::load(&path).unwrap() {
            if let Resource::Pipeline(p) = resource {
                check(&p.spec.steps).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                pipelines += 1;
            }
        }
    }
    assert!(pipelines >= 4, "found {pipelines} pipelines");
}

#[test]
fn enrich_example_gives_the_documented_output() {
    let steps = steps_of("enrich-jq.yaml");
    let mut headers = Headers::new();
    headers.insert("Trace-Id", "t-9");
    let paid =
        r#"{"order_id":"o-1","qty":3,"price":2.5,"status":"paid","customer":{"name":"Ada"}}"#;
    let out = apply(&steps, "orders.eu.created", Some(&headers), paid, 42).unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].payload,
        r#"{"id":"o-1","total":7.5,"customer":"Ada","region":"eu","seq":42}"#
    );
    let OutputHeaders::Changed(Some(h)) = &out[0].headers else {
        panic!("the steps set headers: {:?}", out[0].headers);
    };
    assert_eq!(h.get("Jetflow-Region").unwrap(), "eu");
    assert_eq!(h.get("Order-Source").unwrap(), "orders.eu.created");
    assert!(h.get("Trace-Id").is_none());

    let unpaid = paid.replace("paid", "pending");
    assert!(
        apply(&steps, "orders.eu.created", None, &unpaid, 43)
            .unwrap()
            .is_empty()
    );

    let e = apply(
        &steps,
        "orders.eu.created",
        None,
        r#"{"status":"paid","qty":3,"price":2.5,"customer":"Ada"}"#,
        44,
    )
    .unwrap_err();
    assert_eq!((e.name.as_str(), e.kind), ("summarize", FailureKind::Eval));
    assert!(e.message.contains("cannot index"), "{e}");
    let e = apply(&steps, "orders.eu.created", None, "not json", 45).unwrap_err();
    assert_eq!((e.name.as_str(), e.kind), ("paid-only", FailureKind::Parse));
}

#[test]
fn route_example_routes_by_tenant_and_keeps_the_bytes() {
    let steps = steps_of("route-by-field.yaml");
    let payload = r#"{"tenant": "acme", "type": "login"}"#;
    let out = apply(&steps, "events.auth", None, payload, 1).unwrap();
    assert_eq!(out[0].subject, "tenants.acme.auth");
    assert_eq!(out[0].payload, payload);
    let e = apply(&steps, "events.auth", None, r#"{"type": "login"}"#, 2).unwrap_err();
    assert_eq!((e.name.as_str(), e.kind), ("route", FailureKind::Eval));
    let e = apply(&steps, "events.auth", None, r#"{"tenant": "a b"}"#, 3).unwrap_err();
    assert_eq!(e.kind, FailureKind::Eval);
}

#[test]
fn dead_letter_example_fails_as_documented() {
    let steps = steps_of("dead-letter.yaml");
    let out = apply(
        &steps,
        "payments.card",
        None,
        r#"{"id":"p-1","amount":12.5}"#,
        1,
    )
    .unwrap();
    assert_eq!(out[0].payload, r#"{"id":"p-1","cents":1250}"#);
    let e = apply(
        &steps,
        "payments.card",
        None,
        r#"{"id":"p-1","amount":"12,50"}"#,
        2,
    )
    .unwrap_err();
    assert_eq!(
        (e.name.as_str(), e.kind, e.message.as_str()),
        (
            "amount-in-cents",
            FailureKind::Eval,
            "amount is not a number: 12,50"
        )
    );
    assert!(
        apply(&steps, "payments.card", None, r#"{"id":"p-2"}"#, 3)
            .unwrap()
            .is_empty()
    );
}
