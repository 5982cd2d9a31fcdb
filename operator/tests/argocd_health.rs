//! GitOps tools read the status the operator writes. Here the real reconcilers (against an
//! in-memory Kubernetes API and a real nats-server) bring Pipelines and Streams into each of
//! their states, and then:
//!
//! - the Argo CD health checks of `docs/argocd/` run in a real Lua 5.4 interpreter on the
//!   objects as the API holds them, and must say Healthy, Progressing, Degraded or Suspended
//!   with the operator's message; the argocd-cm and Argo CD chart snippets must hold the
//!   scripts unchanged;
//! - each status must follow the kstatus conventions Flux relies on (`status.observedGeneration`
//!   and a `Ready` condition carrying the generation it describes), and kstatus' rules must
//!   give the expected result for each phase.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use common::{Harness, nats_stream, pipeline, stream};
use jetflow_crds::checkpoint::{Checkpoint, SplitPosition};
use jetflow_crds::names;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

const NAME: &str = "orders-copy";

fn docs() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/argocd")
}

/// The health scripts (Pipeline, Stream) from the argocd-cm snippet, after checking that the
/// Argo CD chart values and the .lua files hold the same text.
fn scripts() -> (String, String) {
    let read = |file: &str| std::fs::read_to_string(docs().join(file)).expect(file);
    let cm: Value = serde_yaml_ng::from_str(&read("argocd-cm.yaml")).unwrap();
    let values: Value = serde_yaml_ng::from_str(&read("argo-cd-values.yaml")).unwrap();
    let mut out = Vec::new();
    for (kind, file) in [
        ("Pipeline", "pipeline-health.lua"),
        ("Stream", "stream-health.lua"),
    ] {
        let key = format!("resource.customizations.health.jetflow.io_{kind}");
        let script = cm["data"][&key]
            .as_str()
            .expect("argocd-cm holds the script");
        assert_eq!(script, read(file), "argocd-cm.yaml differs from {file}");
        assert_eq!(
            values["configs"]["cm"][&key].as_str(),
            Some(script),
            "argo-cd-values.yaml differs from {file}"
        );
        out.push(script.to_owned());
    }
    (out.remove(0), out.remove(0))
}

/// Runs an Argo CD health script on `obj` as Argo CD does: `obj` a global table (absent fields
/// nil), the script's returned table's `status` and `message`.
fn health(script: &str, obj: &Value) -> (String, String) {
    let lua = mlua::Lua::new();
    let options = mlua::SerializeOptions::new()
        .serialize_none_to_null(false)
        .serialize_unit_to_null(false);
    let value = mlua::LuaSerdeExt::to_value_with(&lua, obj, options).expect("obj as Lua");
    lua.globals().set("obj", value).unwrap();
    let hs: mlua::Table = lua
        .load(script)
        .eval()
        .unwrap_or_else(|e| panic!("the health script failed: {e}\nobj: {obj}"));
    (
        hs.get("status").expect("hs.status"),
        hs.get("message").expect("hs.message"),
    )
}

/// kstatus' result for a custom resource (the rules of sigs.k8s.io/cli-utils/pkg/kstatus that
/// Flux applies, with Flux's reading of the `Ready` condition): InProgress while the status
/// describes an older generation or `Reconciling` is true, Failed when `Stalled` is true, then
/// Current when `Ready` is true for this generation, InProgress when it is not.
fn kstatus(obj: &Value) -> &'static str {
    let generation = &obj["metadata"]["generation"];
    let status = &obj["status"];
    if !status["observedGeneration"].is_null() && &status["observedGeneration"] != generation {
        return "InProgress";
    }
    let conditions = status["conditions"].as_array().cloned().unwrap_or_default();
    let find = |t: &str| conditions.iter().find(|c| c["type"] == t);
    if find("Reconciling").is_some_and(|c| c["status"] == "True") {
        return "InProgress";
    }
    if find("Stalled").is_some_and(|c| c["status"] == "True") {
        return "Failed";
    }
    match find("Ready") {
        Some(ready) if &ready["observedGeneration"] != generation => "InProgress",
        Some(ready) if ready["status"] == "True" => "Current",
        Some(_) => "InProgress",
        None => "Current",
    }
}

/// The kstatus conventions a reconciled status must follow.
fn assert_kstatus_conventions(what: &str, obj: &Value) {
    let generation = &obj["metadata"]["generation"];
    assert!(generation.is_i64(), "{what}: no metadata.generation");
    let status = &obj["status"];
    assert_eq!(
        &status["observedGeneration"], generation,
        "{what}: status.observedGeneration"
    );
    let conditions = status["conditions"].as_array().expect("conditions");
    let ready = conditions
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap_or_else(|| panic!("{what}: no Ready condition: {status}"));
    assert_eq!(
        &ready["observedGeneration"], generation,
        "{what}: Ready describes another generation"
    );
    for c in conditions {
        // A condition the operator did not evaluate again (the rollout of an invalid spec)
        // keeps the generation it describes; none claims a generation not observed.
        assert!(
            c["observedGeneration"]
                .as_i64()
                .is_some_and(|g| Some(g) <= generation.as_i64()),
            "{what}: condition {} has observedGeneration {}",
            c["type"],
            c["observedGeneration"]
        );
        assert!(
            matches!(c["status"].as_str(), Some("True" | "False" | "Unknown")),
            "{what}: {c}"
        );
        assert!(
            c["reason"].as_str().is_some_and(|r| !r.is_empty()),
            "{what}: {c}"
        );
        assert!(c["lastTransitionTime"].is_string(), "{what}: {c}");
    }
    assert!(
        ready["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: Ready says nothing"
    );
}

fn spec(filters: &[&str]) -> Value {
    json!({
        "source": {"jetstream": {"stream": "ORDERS", "filterSubjects": filters}},
        "steps": [{"map": "."}],
        "sink": {"jetstream": {"stream": "ORDERS_COPY", "subject": "copy.{{subject}}"}},
        "checkpoint": {"interval": "5s"},
        "parallelism": 2,
    })
}

async fn setup() -> Harness {
    let h = Harness::new().await;
    let js = h.nats.jetstream().await;
    nats_stream(&js, "ORDERS", &["orders.>"], Duration::from_secs(120)).await;
    nats_stream(&js, "ORDERS_COPY", &["copy.>"], Duration::from_secs(120)).await;
    for subject in ["orders.eu", "orders.us", "orders.eu"] {
        js.publish(subject, "{}".into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    h
}

async fn write_checkpoint(h: &Harness, checkpoint: &Checkpoint) {
    h.api::<ConfigMap>()
        .patch(
            &names::checkpoint_config_map(NAME),
            &PatchParams::default(),
            &Patch::Merge(&json!({"data": {
                names::CHECKPOINT_KEY: serde_json::to_string(checkpoint).unwrap()
            }})),
        )
        .await
        .unwrap();
}

async fn pipeline_obj(h: &Harness) -> Value {
    serde_json::to_value(h.pipeline(NAME).await).unwrap()
}

/// One observed state: the object, the health expected, a word its message must contain, and
/// kstatus' expected result (None: the operator has not written a status yet).
struct Case {
    what: &'static str,
    obj: Value,
    health: &'static str,
    says: &'static str,
    kstatus: Option<&'static str>,
}

fn check(script: &str, cases: &[Case]) {
    for case in cases {
        let (status, message) = health(script, &case.obj);
        assert_eq!(
            status, case.health,
            "{}: health {status} ({message}); status: {}",
            case.what, case.obj["status"]
        );
        assert!(
            message.contains(case.says),
            "{}: message {message:?} does not say {:?}",
            case.what,
            case.says
        );
        if let Some(expected) = case.kstatus {
            if !case.what.contains("not observed") {
                assert_kstatus_conventions(case.what, &case.obj);
            }
            assert_eq!(
                kstatus(&case.obj),
                expected,
                "{}: kstatus; status: {}",
                case.what,
                case.obj["status"]
            );
        }
    }
}

#[tokio::test]
async fn pipeline_health_follows_what_the_operator_reports() {
    let (script, _) = scripts();
    let mut cases = Vec::new();

    let h = setup().await;
    h.create_pipeline(pipeline(NAME, spec(&["orders.eu", "orders.us"])))
        .await;
    cases.push(Case {
        what: "created, not reconciled yet",
        obj: pipeline_obj(&h).await,
        health: "Progressing",
        says: "Waiting for the jetflow operator",
        kstatus: None,
    });
    h.reconcile_pipeline(NAME).await.unwrap();
    cases.push(Case {
        what: "Pending: workers starting",
        obj: pipeline_obj(&h).await,
        health: "Progressing",
        says: "workers ready",
        kstatus: Some("InProgress"),
    });
    h.run_workers(NAME, 2).await;
    h.reconcile_pipeline(NAME).await.unwrap();
    h.reconcile_pipeline(NAME).await.unwrap();
    cases.push(Case {
        what: "Running",
        obj: pipeline_obj(&h).await,
        health: "Healthy",
        says: "2 of 2 workers ready",
        kstatus: Some("Current"),
    });

    h.edit_pipeline(NAME, json!({"spec": {"steps": [{"map": ".a"}]}}))
        .await;
    cases.push(Case {
        what: "edited, the new generation not observed yet",
        obj: pipeline_obj(&h).await,
        health: "Progressing",
        says: "observe generation 2",
        kstatus: Some("InProgress"),
    });
    h.reconcile_pipeline(NAME).await.unwrap();
    cases.push(Case {
        what: "rolling out the new configuration",
        obj: pipeline_obj(&h).await,
        health: "Progressing",
        says: "workers are being updated",
        kstatus: Some("Current"),
    });
    h.run_workers(NAME, 2).await;
    h.reconcile_pipeline(NAME).await.unwrap();

    write_checkpoint(
        &h,
        &Checkpoint {
            id: 2,
            time: Some(jiff::Timestamp::now()),
            splits: BTreeMap::from([(
                "orders.eu".into(),
                SplitPosition {
                    position: 1,
                    generation: 1,
                    stopped: Some("message 2 failed in step steps[0]".into()),
                    ..Default::default()
                },
            )]),
        },
    )
    .await;
    h.reconcile_pipeline(NAME).await.unwrap();
    cases.push(Case {
        what: "a split stopped on a failed message",
        obj: pipeline_obj(&h).await,
        health: "Degraded",
        says: "split orders.eu stopped",
        kstatus: Some("Current"),
    });

    h.edit_pipeline(NAME, json!({"spec": {"suspend": true}}))
        .await;
    h.reconcile_pipeline(NAME).await.unwrap();
    cases.push(Case {
        what: "Suspended",
        obj: pipeline_obj(&h).await,
        health: "Suspended",
        says: "spec.suspend is true",
        kstatus: Some("InProgress"),
    });

    // An invalid spec: Failed.
    h.edit_pipeline(
        NAME,
        json!({"spec": {"suspend": false, "source": {"jetstream": {"filterSubjects": ["orders..eu"]}}}}),
    )
    .await;
    h.reconcile_pipeline(NAME).await.unwrap();
    cases.push(Case {
        what: "Failed: invalid spec",
        obj: pipeline_obj(&h).await,
        health: "Degraded",
        says: "spec.source.jetstream.filterSubjects",
        kstatus: Some("Failed"),
    });
    check(&script, &cases);

    // Fixed: no longer Stalled.
    h.edit_pipeline(
        NAME,
        json!({"spec": {"source": {"jetstream": {"filterSubjects": ["orders.eu"]}}}}),
    )
    .await;
    h.reconcile_pipeline(NAME).await.unwrap();
    let fixed = pipeline_obj(&h).await;
    let stalled = fixed["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Stalled");
    assert!(!stalled, "Stalled left after the fix: {fixed}");
    assert_ne!(kstatus(&fixed), "Failed");
}

#[tokio::test]
async fn a_finished_bounded_pipeline_is_healthy() {
    let (script, _) = scripts();
    let h = setup().await;
    let mut spec = spec(&["orders.eu"]);
    spec["source"]["bound"] = json!({"streamEnd": true});
    h.create_pipeline(pipeline(NAME, spec)).await;
    h.reconcile_pipeline(NAME).await.unwrap();
    h.run_workers(NAME, 2).await;
    h.reconcile_pipeline(NAME).await.unwrap();
    write_checkpoint(
        &h,
        &Checkpoint {
            id: 2,
            time: Some(jiff::Timestamp::now()),
            splits: BTreeMap::from([(
                "orders.eu".into(),
                SplitPosition {
                    position: 3,
                    generation: 1,
                    finished: true,
                    ..Default::default()
                },
            )]),
        },
    )
    .await;
    h.reconcile_pipeline(NAME).await.unwrap();
    let obj = pipeline_obj(&h).await;
    assert_eq!(obj["status"]["phase"], "Succeeded", "{}", obj["status"]);
    check(
        &script,
        &[Case {
            what: "Succeeded: a bounded run finished",
            obj,
            health: "Healthy",
            says: "every split reached its bound",
            kstatus: Some("Current"),
        }],
    );
}

#[tokio::test]
async fn stream_health_follows_what_the_operator_reports() {
    let (_, script) = scripts();
    let h = Harness::new().await;
    let obj = |s: jetflow_crds::Stream| serde_json::to_value(s).unwrap();
    let mut cases = Vec::new();

    h.create_stream(stream(
        "orders",
        json!({"name": "ORDERS", "subjects": ["orders.>"]}),
    ))
    .await;
    cases.push(Case {
        what: "created, not reconciled yet",
        obj: obj(h.stream("orders").await),
        health: "Progressing",
        says: "Waiting for the jetflow operator",
        kstatus: None,
    });
    h.reconcile_stream("orders").await.unwrap();
    cases.push(Case {
        what: "synced",
        obj: obj(h.stream("orders").await),
        health: "Healthy",
        says: "exists and is managed",
        kstatus: Some("Current"),
    });
    h.edit_stream(
        "orders",
        json!({"spec": {"subjects": ["orders.>"], "storage": "Memory"}}),
    )
    .await;
    cases.push(Case {
        what: "edited, the new generation not observed yet",
        obj: obj(h.stream("orders").await),
        health: "Progressing",
        says: "observe generation 2",
        kstatus: Some("InProgress"),
    });
    h.reconcile_stream("orders").await.unwrap();
    cases.push(Case {
        what: "a change JetStream cannot make",
        obj: obj(h.stream("orders").await),
        health: "Degraded",
        says: "storage cannot be changed",
        kstatus: Some("Current"),
    });

    h.create_stream(stream(
        "external",
        json!({"name": "EXTERNAL", "mode": "Observe"}),
    ))
    .await;
    h.reconcile_stream("external").await.unwrap();
    cases.push(Case {
        what: "observed stream that does not exist",
        obj: obj(h.stream("external").await),
        health: "Degraded",
        says: "does not exist",
        kstatus: Some("InProgress"),
    });

    h.create_stream(stream(
        "invalid",
        json!({"name": "BAD.NAME", "subjects": ["bad.>"]}),
    ))
    .await;
    h.reconcile_stream("invalid").await.unwrap();
    cases.push(Case {
        what: "invalid spec",
        obj: obj(h.stream("invalid").await),
        health: "Degraded",
        says: "spec.name",
        kstatus: Some("Failed"),
    });
    check(&script, &cases);
}

#[test]
fn the_health_scripts_handle_an_object_without_status_or_generation() {
    let (pipeline_script, stream_script) = scripts();
    for script in [&pipeline_script, &stream_script] {
        let (status, _) = health(script, &json!({"metadata": {"name": "x"}}));
        assert_eq!(status, "Progressing");
    }
}
