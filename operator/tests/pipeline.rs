//! The Pipeline reconciler against an in-memory Kubernetes API and a real nats-server: what it
//! creates, how it rolls, suspends, resumes, deletes, reports invalid specs, survives a write
//! conflict, reassigns splits and notices a stale checkpoint, and that a reconcile with nothing
//! to do writes nothing.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy};
use common::{Harness, NS, conditions, nats_stream, pipeline};
use jetflow_crds::assignment::Assignment;
use jetflow_crds::checkpoint::{Checkpoint, SplitPosition};
use jetflow_crds::pipeline::PipelinePhase;
use jetflow_crds::split::consumer_name;
use jetflow_crds::{Pipeline, names};
use jetflow_operator::pipeline::build::{CONFIG_HASH_ANNOTATION, RESET_APPLIED_ANNOTATION};
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use serde_json::json;

const NAME: &str = "orders-copy";

fn spec(filters: &[&str]) -> serde_json::Value {
    json!({
        "source": {"jetstream": {"stream": "ORDERS", "filterSubjects": filters}},
        "steps": [{"map": "."}],
        "sink": {"jetstream": {"stream": "ORDERS_COPY", "subject": "copy.{{subject}}"}},
        "checkpoint": {"interval": "5s"},
        "parallelism": 2,
    })
}

fn orders() -> Pipeline {
    pipeline(NAME, spec(&["orders.eu", "orders.us"]))
}

/// A harness with the source stream (3 messages on orders.eu, 2 on orders.us) and the sink
/// stream.
async fn setup() -> Harness {
    let h = Harness::new().await;
    let js = h.nats.jetstream().await;
    nats_stream(&js, "ORDERS", &["orders.>"], Duration::from_secs(120)).await;
    nats_stream(&js, "ORDERS_COPY", &["copy.>"], Duration::from_secs(120)).await;
    for subject in [
        "orders.eu",
        "orders.eu",
        "orders.us",
        "orders.eu",
        "orders.us",
    ] {
        js.publish(subject, "{}".into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    h
}

async fn status(h: &Harness) -> jetflow_crds::PipelineStatus {
    h.pipeline(NAME).await.status.expect("status")
}

async fn assignment(h: &Harness) -> Assignment {
    let cm = h
        .config_map(&names::assignment_config_map(NAME))
        .await
        .expect("assignment");
    serde_json::from_str(&cm.data.unwrap()[names::ASSIGNMENT_KEY]).unwrap()
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

fn hash(d: &k8s_openapi::api::apps::v1::Deployment) -> String {
    d.spec
        .as_ref()
        .unwrap()
        .template
        .metadata
        .as_ref()
        .unwrap()
        .annotations
        .as_ref()
        .unwrap()[CONFIG_HASH_ANNOTATION]
        .clone()
}

async fn consumer(h: &Harness, split: &str) -> Option<async_nats::jetstream::consumer::Info> {
    let js = h.nats.jetstream().await;
    let stream = js.get_stream("ORDERS").await.unwrap();
    stream
        .consumer_info(consumer_name(NS, NAME, split))
        .await
        .ok()
}

/// Creates the pipeline, reconciles, starts both workers and reconciles until settled.
async fn running(h: &Harness) {
    h.create_pipeline(orders()).await;
    h.reconcile_pipeline(NAME).await.unwrap();
    h.run_workers(NAME, 2).await;
    h.reconcile_pipeline(NAME).await.unwrap();
    h.reconcile_pipeline(NAME).await.unwrap();
}

#[tokio::test]
async fn create_builds_every_object_and_one_consumer_per_split() {
    let h = setup().await;
    h.create_pipeline(orders()).await;
    let action = h.reconcile_pipeline(NAME).await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(15)));

    // Worker configuration: the Pipeline manifest, loadable by the worker.
    let config = h
        .config_map(&names::config_map(NAME))
        .await
        .expect("config");
    let yaml = &config.data.as_ref().unwrap()[names::CONFIG_KEY];
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pipeline.yaml"), yaml).unwrap();
    let loaded =
        jetflow_crds::manifest::load_pipeline(&dir.path().join("pipeline.yaml"), None).unwrap();
    assert_eq!(loaded.metadata.name.as_deref(), Some(NAME));
    assert_eq!(loaded.spec.connection.unwrap().url, Some(h.nats.url()));

    // RBAC, owned by the Pipeline.
    let uid = h.pipeline(NAME).await.metadata.uid.unwrap();
    let sa = h
        .api::<ServiceAccount>()
        .get("orders-copy-worker")
        .await
        .unwrap();
    assert_eq!(sa.metadata.owner_references.unwrap()[0].uid, uid);
    h.api::<Role>().get("orders-copy-worker").await.unwrap();
    h.api::<RoleBinding>()
        .get("orders-copy-worker")
        .await
        .unwrap();

    // The checkpoint ConfigMap exists (workers never need `create`) and has no owner.
    let checkpoint = h
        .config_map(&names::checkpoint_config_map(NAME))
        .await
        .unwrap();
    assert!(checkpoint.metadata.owner_references.is_none());

    // The Deployment: parallelism replicas, the configuration hash on the pod template.
    let deployment = h
        .deployment("orders-copy-worker")
        .await
        .expect("deployment");
    assert_eq!(deployment.spec.as_ref().unwrap().replicas, Some(2));
    assert_eq!(hash(&deployment).len(), 16);
    assert_eq!(
        deployment.metadata.owner_references.as_ref().unwrap()[0].uid,
        uid
    );

    // One durable consumer per split; the source is a Limits stream, so it takes no acks.
    for (split, pending) in [("orders.eu", 3), ("orders.us", 2)] {
        let info = consumer(&h, split).await.expect("consumer");
        assert_eq!(info.config.ack_policy, AckPolicy::None);
        assert_eq!(info.config.filter_subject, split);
        assert!(info.config.ack_wait > Duration::from_secs(10));
        assert_eq!(info.num_pending, pending);
    }

    let st = status(&h).await;
    assert_eq!(st.phase, Some(PipelinePhase::Pending));
    let c = conditions(&st.conditions);
    assert_eq!(c["SpecValid"].0, "True");
    assert_eq!(c["Ready"], ("False".into(), "WorkersNotReady".into()));
    assert_eq!(st.lag, Some(5));
    assert_eq!(st.splits.len(), 2);
    // Two Events: the dead-letter Stream (no stream captures jetflow.dlq.orders-copy), and the
    // objects.
    assert_eq!(h.event_reasons(NAME).await, vec!["Created", "Created"]);
    let dlq = h
        .api::<jetflow_crds::Stream>()
        .get_opt("orders-copy-dlq")
        .await
        .expect("read stream")
        .expect("the dead-letter Stream");
    assert_eq!(
        dlq.spec.subjects,
        vec!["jetflow.dlq.orders-copy".to_owned()]
    );
    assert_eq!(dlq.metadata.owner_references.as_ref().unwrap()[0].uid, uid);
    // For the scale subresource: the worker Deployment's selector, and no pod yet.
    let selects = deployment
        .spec
        .as_ref()
        .unwrap()
        .selector
        .match_labels
        .clone();
    let selects: Vec<String> = selects
        .unwrap()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    assert_eq!(st.selector, Some(selects.join(",")));
    assert_eq!(st.replicas, 0);

    // Workers become ready: splits are assigned, the pipeline runs.
    h.run_workers(NAME, 2).await;
    h.reconcile_pipeline(NAME).await.unwrap();
    let a = assignment(&h).await;
    assert_eq!(a.generation, 1);
    assert_eq!(a.splits_of("orders-copy-worker-0").count(), 1);
    assert_eq!(a.splits_of("orders-copy-worker-1").count(), 1);
    let st = status(&h).await;
    assert_eq!(st.phase, Some(PipelinePhase::Running));
    assert_eq!((st.replicas, st.ready_replicas), (2, 2));
    assert_eq!(conditions(&st.conditions)["Ready"].0, "True");
    assert_eq!(conditions(&st.conditions)["Progressing"].0, "False");
    assert!(st.splits.iter().all(|s| s.owner.is_some()));
    h.assert_calls_permitted();
}

#[tokio::test]
async fn a_split_stopped_on_a_failed_message_is_reported_in_a_condition_and_an_event() {
    let h = setup().await;
    running(&h).await;
    let why = "message 3 failed in step steps[0]: eval: cannot index number with \"a\"";
    // What a worker commits when a message fails under errors.policy Stop.
    let checkpoint = |stopped: Option<&str>, position| Checkpoint {
        id: 2,
        time: Some(jiff::Timestamp::now()),
        splits: BTreeMap::from([(
            "orders.eu".into(),
            SplitPosition {
                position,
                generation: 1,
                stopped: stopped.map(Into::into),
                ..Default::default()
            },
        )]),
    };
    write_checkpoint(&h, &checkpoint(Some(why), 2)).await;
    h.reconcile_pipeline(NAME).await.unwrap();
    h.reconcile_pipeline(NAME).await.unwrap();

    let st = status(&h).await;
    let degraded = st
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded")
        .unwrap();
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", "SplitStopped")
    );
    let message = &degraded.message;
    assert!(
        message.contains("split orders.eu stopped") && message.contains(why),
        "{message}"
    );
    let eu = st.splits.iter().find(|s| s.name == "orders.eu").unwrap();
    assert_eq!(eu.stopped.as_deref(), Some(why));
    let events = h.event_reasons(NAME).await;
    assert_eq!(
        events.iter().filter(|r| *r == "SplitStopped").count(),
        1,
        "one event, not one per resync: {events:?}"
    );

    // Fixed and past the message: the condition clears.
    write_checkpoint(&h, &checkpoint(None, 3)).await;
    h.reconcile_pipeline(NAME).await.unwrap();
    let st = status(&h).await;
    assert_eq!(conditions(&st.conditions)["Degraded"].0, "False");
    h.assert_calls_permitted();
}

#[tokio::test]
async fn a_changed_resource_quantity_is_applied() {
    let h = setup().await;
    let mut p = orders();
    p.spec.worker = Some(
        serde_json::from_value(json!({"resources": {
            "requests": {"cpu": "1000m", "memory": "0.5Gi"},
            "limits": {"cpu": "1500m"},
        }}))
        .unwrap(),
    );
    h.create_pipeline(p).await;
    h.reconcile_pipeline(NAME).await.unwrap();
    h.run_workers(NAME, 2).await;
    h.reconcile_pipeline(NAME).await.unwrap();
    h.reconcile_pipeline(NAME).await.unwrap();
    h.edit_pipeline(
        NAME,
        json!({"spec": {"worker": {"resources": {"limits": {"cpu": "2"}}}}}),
    )
    .await;
    h.clear_calls();
    h.reconcile_pipeline(NAME).await.unwrap();
    let d = h.deployment("orders-copy-worker").await.unwrap();
    let limits = d.spec.unwrap().template.spec.unwrap().containers[0]
        .resources
        .clone()
        .unwrap()
        .limits
        .unwrap();
    assert_eq!(limits["cpu"].0, "2");
}

#[tokio::test]
async fn reconcile_of_a_pipeline_already_as_desired_makes_no_writes() {
    let h = setup().await;
    running(&h).await;
    // A worker committed a checkpoint (with the clock's full precision) since the last resync.
    write_checkpoint(
        &h,
        &Checkpoint {
            id: 1,
            time: Some(jiff::Timestamp::now()),
            splits: BTreeMap::from([(
                "orders.eu".into(),
                SplitPosition {
                    position: 1,
                    generation: 1,
                    ..Default::default()
                },
            )]),
        },
    )
    .await;
    h.reconcile_pipeline(NAME).await.unwrap();
    let created_before = consumer(&h, "orders.eu").await.unwrap().created;
    h.clear_calls();
    h.reconcile_pipeline(NAME).await.unwrap();
    assert_eq!(h.writes(), vec![], "a reconcile with nothing to do wrote");
    assert!(!h.calls.lock().unwrap().is_empty(), "it did read");
    assert_eq!(
        consumer(&h, "orders.eu").await.unwrap().created,
        created_before
    );
    h.assert_calls_permitted();
}

#[tokio::test]
async fn spec_change_rolls_the_workers() {
    let h = setup().await;
    running(&h).await;
    let before = hash(&h.deployment("orders-copy-worker").await.unwrap());
    h.edit_pipeline(NAME, json!({"spec": {"steps": [{"map": "{id: .id}"}]}}))
        .await;
    h.reconcile_pipeline(NAME).await.unwrap();
    let after = h.deployment("orders-copy-worker").await.unwrap();
    assert_ne!(
        hash(&after),
        before,
        "the configuration hash rolls the pods"
    );
    let config = h.config_map(&names::config_map(NAME)).await.unwrap();
    assert!(config.data.unwrap()[names::CONFIG_KEY].contains("{id: .id}"));
    let st = status(&h).await;
    assert_eq!(
        conditions(&st.conditions)["Progressing"],
        ("True".into(), "RollingOut".into())
    );
    assert!(h.event_reasons(NAME).await.contains(&"Rolled".to_owned()));
    // The rollout completes.
    h.run_workers(NAME, 2).await;
    h.reconcile_pipeline(NAME).await.unwrap();
    assert_eq!(
        conditions(&status(&h).await.conditions)["Progressing"].0,
        "False"
    );
}

#[tokio::test]
async fn suspend_stops_the_workers_and_resume_starts_them_again() {
    let h = setup().await;
    running(&h).await;
    let checkpoint = Checkpoint {
        id: 4,
        time: Some(jiff::Timestamp::now()),
        splits: BTreeMap::from([(
            "orders.eu".into(),
            SplitPosition {
                position: 2,
                generation: 1,
                ..Default::default()
            },
        )]),
    };
    write_checkpoint(&h, &checkpoint).await;

    h.edit_pipeline(NAME, json!({"spec": {"suspend": true}}))
        .await;
    h.reconcile_pipeline(NAME).await.unwrap();
    let d = h.deployment("orders-copy-worker").await.unwrap();
    assert_eq!(d.spec.unwrap().replicas, Some(0));
    h.run_workers(NAME, 0).await;
    h.reconcile_pipeline(NAME).await.unwrap();
    let st = status(&h).await;
    assert_eq!(st.phase, Some(PipelinePhase::Suspended));
    assert_eq!(
        conditions(&st.conditions)["Ready"],
        ("False".into(), "Suspended".into())
    );
    assert_eq!(
        st.splits[0].position, 2,
        "positions are kept while suspended"
    );

    h.edit_pipeline(NAME, json!({"spec": {"suspend": false}}))
        .await;
    h.reconcile_pipeline(NAME).await.unwrap();
    let d = h.deployment("orders-copy-worker").await.unwrap();
    assert_eq!(d.spec.unwrap().replicas, Some(2));
    h.run_workers(NAME, 2).await;
    h.reconcile_pipeline(NAME).await.unwrap();
    let st = status(&h).await;
    assert_eq!(st.phase, Some(PipelinePhase::Running));
    assert_eq!(st.splits[0].position, 2);
}

#[tokio::test]
async fn delete_removes_consumers_keeps_the_checkpoint_and_a_new_pipeline_resumes() {
    let h = setup().await;
    running(&h).await;
    let checkpoint = Checkpoint {
        id: 9,
        time: Some(jiff::Timestamp::now()),
        splits: BTreeMap::from([(
            "orders.eu".into(),
            SplitPosition {
                position: 2,
                generation: 1,
                ..Default::default()
            },
        )]),
    };
    write_checkpoint(&h, &checkpoint).await;

    let h = h.mark_deleted::<Pipeline>(NAME).await;
    h.reconcile_pipeline(NAME).await.unwrap();
    h.run_workers(NAME, 0).await;
    h.reconcile_pipeline(NAME).await.unwrap();
    assert!(h.api::<Pipeline>().get_opt(NAME).await.unwrap().is_none());
    assert!(
        consumer(&h, "orders.eu").await.is_none(),
        "consumers removed"
    );
    assert!(consumer(&h, "orders.us").await.is_none());
    assert!(
        h.deployment("orders-copy-worker").await.is_none(),
        "owned objects go"
    );
    assert!(h.config_map(&names::config_map(NAME)).await.is_none());
    let kept = h.config_map(&names::checkpoint_config_map(NAME)).await;
    assert!(kept.is_some(), "the checkpoint outlives the Pipeline");
    h.assert_calls_permitted();

    // Applied again (a GitOps re-sync): the split resumes after its committed position.
    h.create_pipeline(orders()).await;
    h.reconcile_pipeline(NAME).await.unwrap();
    let info = consumer(&h, "orders.eu").await.unwrap();
    assert_eq!(
        info.config.deliver_policy,
        DeliverPolicy::ByStartSequence { start_sequence: 3 }
    );
    assert_eq!(status(&h).await.splits[0].position, 2);
    assert!(h.event_reasons(NAME).await.contains(&"Adopted".to_owned()));
}

#[tokio::test]
async fn delete_stops_the_workers_before_it_removes_the_consumers() {
    let h = setup().await;
    running(&h).await;
    let h = h.mark_deleted::<Pipeline>(NAME).await;
    let action = h.reconcile_pipeline(NAME).await.unwrap();
    // The workers still run: they would make a deleted consumer again at once.
    assert!(
        consumer(&h, "orders.eu").await.is_some(),
        "a consumer was removed while its worker still runs"
    );
    assert!(consumer(&h, "orders.us").await.is_some());
    let d = h.deployment("orders-copy-worker").await.unwrap();
    assert_eq!(d.spec.unwrap().replicas, Some(0), "the workers are stopped");
    assert!(
        h.api::<Pipeline>().get_opt(NAME).await.unwrap().is_some(),
        "the finalizer stays while workers run"
    );
    assert_eq!(
        action,
        Action::requeue(jetflow_operator::pipeline::reconcile::STOPPING_RECHECK)
    );
    // One pod still terminating (writing its final checkpoint): still waiting.
    h.run_workers(NAME, 1).await;
    h.reconcile_pipeline(NAME).await.unwrap();
    assert!(consumer(&h, "orders.eu").await.is_some());
    // Every worker gone: the consumers go, and the Pipeline with them.
    h.run_workers(NAME, 0).await;
    h.reconcile_pipeline(NAME).await.unwrap();
    assert!(consumer(&h, "orders.eu").await.is_none());
    assert!(consumer(&h, "orders.us").await.is_none());
    assert!(h.api::<Pipeline>().get_opt(NAME).await.unwrap().is_none());
    h.assert_calls_permitted();
}

#[tokio::test]
async fn a_split_consumer_has_an_inactivity_threshold() {
    let h = setup().await;
    h.create_pipeline(orders()).await;
    h.reconcile_pipeline(NAME).await.unwrap();
    let info = consumer(&h, "orders.eu").await.unwrap();
    assert!(
        info.config.inactive_threshold >= Duration::from_secs(3600),
        "{:?}",
        info.config.inactive_threshold
    );
}

#[tokio::test]
async fn a_pipeline_applied_again_publishes_a_generation_above_its_checkpoint() {
    let h = setup().await;
    running(&h).await;
    // The earlier Pipeline's workers went through several rebalances.
    let checkpoint = Checkpoint {
        id: 30,
        time: Some(jiff::Timestamp::now()),
        splits: BTreeMap::from([
            (
                "orders.eu".into(),
                SplitPosition {
                    position: 2,
                    owner: Some("orders-copy-worker-old-1".into()),
                    generation: 7,
                    ..Default::default()
                },
            ),
            (
                "orders.us".into(),
                SplitPosition {
                    position: 1,
                    owner: Some("orders-copy-worker-old-0".into()),
                    generation: 5,
                    ..Default::default()
                },
            ),
        ]),
    };
    write_checkpoint(&h, &checkpoint).await;
    let h = h.mark_deleted::<Pipeline>(NAME).await;
    h.run_workers(NAME, 0).await;
    h.reconcile_pipeline(NAME).await.unwrap();
    assert!(
        h.config_map(&names::assignment_config_map(NAME))
            .await
            .is_none(),
        "the assignment goes with the Pipeline"
    );

    h.create_pipeline(orders()).await;
    h.reconcile_pipeline(NAME).await.unwrap();
    h.run_workers(NAME, 2).await;
    h.reconcile_pipeline(NAME).await.unwrap();
    let a = assignment(&h).await;
    assert!(
        a.generation > 7,
        "generation {} would make every commit of the new workers stale",
        a.generation
    );
    // A worker's commit under the published generation is accepted by the store's rules.
    let next = checkpoint.merged(
        &BTreeMap::from([(
            "orders.eu".into(),
            SplitPosition {
                position: 3,
                owner: a.owners.get("orders.eu").cloned(),
                generation: a.generation,
                ..Default::default()
            },
        )]),
        jiff::Timestamp::now(),
    );
    assert!(next.is_ok(), "{next:?}");
    // Settled: the generation stays where it is.
    h.reconcile_pipeline(NAME).await.unwrap();
    assert_eq!(assignment(&h).await.generation, a.generation);
}

#[tokio::test]
async fn a_change_of_parallelism_or_suspend_rolls_no_worker() {
    let h = setup().await;
    running(&h).await;
    let config = h.config_map(&names::config_map(NAME)).await.unwrap();
    let before = hash(&h.deployment("orders-copy-worker").await.unwrap());
    h.edit_pipeline(NAME, json!({"spec": {"parallelism": 3}}))
        .await;
    h.reconcile_pipeline(NAME).await.unwrap();
    let d = h.deployment("orders-copy-worker").await.unwrap();
    assert_eq!(d.spec.as_ref().unwrap().replicas, Some(3));
    assert_eq!(hash(&d), before, "a scale keeps the pods that stay");
    assert_eq!(
        h.config_map(&names::config_map(NAME)).await.unwrap().data,
        config.data
    );
    assert!(!h.event_reasons(NAME).await.contains(&"Rolled".to_owned()));
    h.edit_pipeline(NAME, json!({"spec": {"suspend": true}}))
        .await;
    h.reconcile_pipeline(NAME).await.unwrap();
    let d = h.deployment("orders-copy-worker").await.unwrap();
    assert_eq!(d.spec.as_ref().unwrap().replicas, Some(0));
    assert_eq!(hash(&d), before);
}

#[tokio::test]
async fn reset_annotation_discards_the_checkpoint_and_recreates_consumers() {
    let h = setup().await;
    running(&h).await;
    write_checkpoint(
        &h,
        &Checkpoint {
            id: 3,
            time: Some(jiff::Timestamp::now()),
            splits: BTreeMap::from([(
                "orders.eu".into(),
                SplitPosition {
                    position: 2,
                    generation: 1,
                    ..Default::default()
                },
            )]),
        },
    )
    .await;
    let hash_before = hash(&h.deployment("orders-copy-worker").await.unwrap());
    let generation_before = assignment(&h).await.generation;
    h.edit_pipeline(
        NAME,
        json!({"metadata": {"annotations": {names::RESET_ANNOTATION: "2026-11-26"}}}),
    )
    .await;
    h.reconcile_pipeline(NAME).await.unwrap();

    let cm = h
        .config_map(&names::checkpoint_config_map(NAME))
        .await
        .unwrap();
    assert_eq!(
        cm.metadata.annotations.as_ref().unwrap()[RESET_APPLIED_ANNOTATION],
        "2026-11-26"
    );
    let checkpoint: Checkpoint =
        serde_json::from_str(&cm.data.unwrap()[names::CHECKPOINT_KEY]).unwrap();
    let generation = assignment(&h).await.generation;
    assert!(generation > generation_before);
    assert_eq!(checkpoint.splits["orders.eu"].position, 0);
    assert_eq!(checkpoint.splits["orders.eu"].generation, generation);
    let info = consumer(&h, "orders.eu").await.unwrap();
    assert_eq!(info.config.deliver_policy, DeliverPolicy::All);
    assert_eq!(
        info.num_pending, 3,
        "the consumer starts again from the start"
    );
    assert_ne!(
        hash(&h.deployment("orders-copy-worker").await.unwrap()),
        hash_before
    );
    assert!(h.event_reasons(NAME).await.contains(&"Reset".to_owned()));
    // The new workers carry the checkpoint's epoch; the old ones' stores refuse to write into it.
    let config = h.config_map(&names::config_map(NAME)).await.unwrap();
    let worker: Pipeline =
        serde_yaml_ng::from_str(&config.data.unwrap()[names::CONFIG_KEY]).unwrap();
    assert_eq!(
        worker.metadata.annotations.unwrap()[RESET_APPLIED_ANNOTATION],
        "2026-11-26"
    );

    // The same value again resets nothing.
    h.clear_calls();
    h.reconcile_pipeline(NAME).await.unwrap();
    assert!(
        !h.writes()
            .iter()
            .any(|c| c.resource == "configmaps" && c.verb == "update"),
        "a reset happens once per value"
    );
}

#[tokio::test]
async fn rewind_annotation_moves_every_split_once_per_value_and_a_reset_still_applies() {
    let h = setup().await;
    running(&h).await;
    write_checkpoint(
        &h,
        &Checkpoint {
            id: 3,
            time: Some(jiff::Timestamp::now()),
            splits: BTreeMap::from([(
                "orders.eu".into(),
                SplitPosition {
                    position: 3,
                    generation: 1,
                    ..Default::default()
                },
            )]),
        },
    )
    .await;
    let checkpoint_of = async |h: &Harness| -> (Checkpoint, String) {
        let cm = h
            .config_map(&names::checkpoint_config_map(NAME))
            .await
            .unwrap();
        let epoch = cm.metadata.annotations.as_ref().unwrap()[RESET_APPLIED_ANNOTATION].clone();
        (
            serde_json::from_str(&cm.data.unwrap()[names::CHECKPOINT_KEY]).unwrap(),
            epoch,
        )
    };

    // Not a rewind: a Warning, nothing moves.
    h.edit_pipeline(
        NAME,
        json!({"metadata": {"annotations": {names::REWIND_ANNOTATION: "sequence=zero"}}}),
    )
    .await;
    h.reconcile_pipeline(NAME).await.unwrap();
    assert!(
        h.event_reasons(NAME)
            .await
            .contains(&"InvalidRewind".to_owned())
    );
    let cm = h
        .config_map(&names::checkpoint_config_map(NAME))
        .await
        .unwrap();
    let cp: Checkpoint = serde_json::from_str(&cm.data.unwrap()[names::CHECKPOINT_KEY]).unwrap();
    assert_eq!(cp.splits["orders.eu"].position, 3);

    // To sequence 2: the split reads from 2 on, under a new generation and epoch.
    let generation_before = assignment(&h).await.generation;
    h.edit_pipeline(
        NAME,
        json!({"metadata": {"annotations": {names::REWIND_ANNOTATION: "sequence=2;at=1"}}}),
    )
    .await;
    h.reconcile_pipeline(NAME).await.unwrap();
    let (cp, epoch) = checkpoint_of(&h).await;
    let generation = assignment(&h).await.generation;
    assert!(generation > generation_before);
    assert_eq!(cp.splits["orders.eu"].position, 1);
    assert_eq!(cp.splits["orders.eu"].generation, generation);
    assert_eq!(epoch, "|rewind=sequence=2;at=1");
    let info = consumer(&h, "orders.eu").await.unwrap();
    assert_eq!(
        info.config.deliver_policy,
        DeliverPolicy::ByStartSequence { start_sequence: 2 }
    );
    assert!(h.event_reasons(NAME).await.contains(&"Rewound".to_owned()));
    let config = h.config_map(&names::config_map(NAME)).await.unwrap();
    let worker: Pipeline =
        serde_yaml_ng::from_str(&config.data.unwrap()[names::CONFIG_KEY]).unwrap();
    assert_eq!(
        worker.metadata.annotations.unwrap()[RESET_APPLIED_ANNOTATION],
        epoch,
        "the new workers carry the new epoch; the old ones cannot write"
    );

    // The same value again moves nothing.
    h.clear_calls();
    h.reconcile_pipeline(NAME).await.unwrap();
    assert!(
        !h.writes()
            .iter()
            .any(|c| c.resource == "configmaps" && c.verb == "update"),
        "a rewind happens once per value"
    );

    // A reset afterwards still applies, and keeps the rewind applied.
    h.edit_pipeline(
        NAME,
        json!({"metadata": {"annotations": {names::RESET_ANNOTATION: "r1"}}}),
    )
    .await;
    h.reconcile_pipeline(NAME).await.unwrap();
    let (cp, epoch) = checkpoint_of(&h).await;
    assert_eq!(cp.splits["orders.eu"].position, 0);
    assert_eq!(epoch, "r1|rewind=sequence=2;at=1");
    h.clear_calls();
    h.reconcile_pipeline(NAME).await.unwrap();
    assert!(
        !h.writes()
            .iter()
            .any(|c| c.resource == "configmaps" && c.verb == "update"),
        "neither applies twice"
    );
}

#[tokio::test]
async fn invalid_field_is_reported_and_waits_for_a_change() {
    let h = setup().await;
    h.create_pipeline(pipeline(NAME, spec(&["orders..eu"])))
        .await;
    let action = h.reconcile_pipeline(NAME).await.unwrap();
    assert_eq!(action, Action::await_change(), "no hot requeue");
    let st = status(&h).await;
    assert_eq!(st.phase, Some(PipelinePhase::Failed));
    let c = conditions(&st.conditions);
    assert_eq!(c["SpecValid"], ("False".into(), "InvalidSpec".into()));
    assert_eq!(c["Ready"], ("False".into(), "InvalidSpec".into()));
    let message = &st
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap()
        .message;
    assert!(
        message.contains("spec.source.jetstream.filterSubjects[0]"),
        "{message}"
    );
    assert!(h.deployment("orders-copy-worker").await.is_none());
    assert_eq!(h.event_reasons(NAME).await, vec!["InvalidSpec"]);
    assert_eq!(h.ctx.metrics.errors_of("pipeline", "invalid_spec"), 1);

    // Reconciled again unchanged: no new Event, no write.
    h.clear_calls();
    h.reconcile_pipeline(NAME).await.unwrap();
    assert_eq!(h.writes(), vec![]);

    // Fixed: it runs.
    h.edit_pipeline(
        NAME,
        json!({"spec": {"source": {"jetstream": {"filterSubjects": ["orders.eu"]}}}}),
    )
    .await;
    h.reconcile_pipeline(NAME).await.unwrap();
    assert!(h.deployment("orders-copy-worker").await.is_some());
    assert_eq!(
        conditions(&status(&h).await.conditions)["SpecValid"].0,
        "True"
    );
}

#[tokio::test]
async fn step_that_does_not_compile_is_reported() {
    let h = setup().await;
    let mut p = orders();
    p.spec.steps[0].map = Some(".id |".into());
    h.create_pipeline(p).await;
    let action = h.reconcile_pipeline(NAME).await.unwrap();
    assert_eq!(action, Action::await_change());
    let st = status(&h).await;
    assert_eq!(
        conditions(&st.conditions)["SpecValid"],
        ("False".into(), "InvalidStep".into())
    );
    let message = &st
        .conditions
        .iter()
        .find(|c| c.type_ == "SpecValid")
        .unwrap()
        .message;
    assert!(message.contains("spec.steps[0]"), "{message}");
    assert!(h.deployment("orders-copy-worker").await.is_none());
}

#[tokio::test]
async fn missing_streams_are_reported_and_retried() {
    let h = Harness::new().await;
    h.create_pipeline(orders()).await;
    let action = h.reconcile_pipeline(NAME).await.unwrap();
    assert_eq!(
        action,
        Action::requeue(Duration::from_secs(15)),
        "retried: a stream may appear"
    );
    let st = status(&h).await;
    assert_eq!(st.phase, Some(PipelinePhase::Pending));
    let c = conditions(&st.conditions);
    assert_eq!(c["SpecValid"].0, "True");
    assert_eq!(c["Ready"], ("False".into(), "SourceStreamNotFound".into()));
    let message = &st
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap()
        .message;
    assert!(
        message.contains("ORDERS_COPY"),
        "both streams are named: {message}"
    );

    let js = h.nats.jetstream().await;
    nats_stream(&js, "ORDERS", &["orders.>"], Duration::from_secs(120)).await;
    h.reconcile_pipeline(NAME).await.unwrap();
    let c = conditions(&status(&h).await.conditions);
    assert_eq!(c["Ready"], ("False".into(), "SinkStreamNotFound".into()));
    assert!(h.deployment("orders-copy-worker").await.is_none());

    nats_stream(&js, "ORDERS_COPY", &["copy.>"], Duration::from_secs(120)).await;
    h.reconcile_pipeline(NAME).await.unwrap();
    assert!(h.deployment("orders-copy-worker").await.is_some());
}

#[tokio::test]
async fn a_work_queue_source_stream_is_reported_and_no_worker_is_made() {
    let h = Harness::new().await;
    let js = h.nats.jetstream().await;
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "ORDERS".into(),
        subjects: vec!["orders.>".into()],
        retention: async_nats::jetstream::stream::RetentionPolicy::WorkQueue,
        ..Default::default()
    })
    .await
    .unwrap();
    nats_stream(&js, "ORDERS_COPY", &["copy.>"], Duration::from_secs(120)).await;
    h.create_pipeline(orders()).await;
    h.reconcile_pipeline(NAME).await.unwrap();
    let st = status(&h).await;
    let c = conditions(&st.conditions);
    assert_eq!(
        c["Ready"],
        ("False".into(), "UnsupportedSourceRetention".into())
    );
    let message = &st
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap()
        .message;
    assert!(
        message.contains("spec.source.jetstream.stream: stream ORDERS has WorkQueue retention"),
        "{message}"
    );
    assert!(h.deployment("orders-copy-worker").await.is_none());
    let mut stream = js.get_stream("ORDERS").await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.consumer_count, 0);
}

#[tokio::test]
async fn short_duplicate_window_is_a_warning_condition() {
    let h = Harness::new().await;
    let js = h.nats.jetstream().await;
    nats_stream(&js, "ORDERS", &["orders.>"], Duration::from_secs(120)).await;
    nats_stream(&js, "ORDERS_COPY", &["copy.>"], Duration::from_secs(10)).await;
    h.create_pipeline(orders()).await;
    h.reconcile_pipeline(NAME).await.unwrap();
    let st = status(&h).await;
    let c = conditions(&st.conditions);
    assert_eq!(
        c["Degraded"],
        ("True".into(), "DuplicateWindowTooShort".into())
    );
    assert_eq!(c["SpecValid"].0, "True");
    assert!(
        h.deployment("orders-copy-worker").await.is_some(),
        "it still runs"
    );
}

#[tokio::test]
async fn conflict_on_the_assignment_write_is_retried_from_a_fresh_read() {
    let h = setup().await;
    h.create_pipeline(orders()).await;
    h.reconcile_pipeline(NAME).await.unwrap();
    h.run_workers(NAME, 2).await;

    // Another writer (an operator replica that was leader a moment ago) publishes an
    // assignment just before this reconcile writes its own.
    let assignment_name = names::assignment_config_map(NAME);
    h.before_request("patch", &assignment_name, |raw| async move {
        let other = Assignment {
            generation: 5,
            owners: BTreeMap::from([("orders.eu".into(), "gone-pod".into())]),
        };
        kube::Api::<ConfigMap>::namespaced(raw, NS)
            .patch(
                &names::assignment_config_map(NAME),
                &PatchParams::default(),
                &Patch::Merge(&json!({"data": {
                    names::ASSIGNMENT_KEY: serde_json::to_string(&other).unwrap()
                }})),
            )
            .await
            .unwrap();
    });
    let err = h.reconcile_pipeline(NAME).await.unwrap_err();
    assert_eq!(err.category(), "conflict", "{err}");
    assert!(err.is_conflict());
    assert_eq!(
        h.ctx.backoff("any", &err),
        Duration::from_secs(1),
        "retried promptly"
    );
    assert_eq!(assignment(&h).await.generation, 5, "the other write stands");

    h.reconcile_pipeline(NAME).await.unwrap();
    let a = assignment(&h).await;
    assert_eq!(
        a.generation, 6,
        "the next generation after the other writer's"
    );
    assert!(
        a.owners
            .values()
            .all(|o| o.starts_with("orders-copy-worker-"))
    );
    assert_eq!(a.owners.len(), 2);
}

#[tokio::test]
async fn a_pod_leaving_moves_only_its_splits() {
    let h = setup().await;
    let four = ["orders.eu", "orders.us", "orders.apac", "orders.latam"];
    h.create_pipeline(pipeline(NAME, spec(&four))).await;
    h.reconcile_pipeline(NAME).await.unwrap();
    h.run_workers(NAME, 2).await;
    h.reconcile_pipeline(NAME).await.unwrap();
    let before = assignment(&h).await;
    assert_eq!(before.splits_of("orders-copy-worker-0").count(), 2);
    assert_eq!(before.splits_of("orders-copy-worker-1").count(), 2);

    h.run_workers(NAME, 1).await;
    h.reconcile_pipeline(NAME).await.unwrap();
    let after = assignment(&h).await;
    assert_eq!(after.generation, before.generation + 1);
    assert!(after.owners.values().all(|o| o == "orders-copy-worker-0"));
    for split in before.splits_of("orders-copy-worker-0") {
        assert_eq!(after.owners[split], "orders-copy-worker-0");
    }
    let st = status(&h).await;
    assert!(
        st.splits
            .iter()
            .all(|s| s.owner.as_deref() == Some("orders-copy-worker-0"))
    );
    assert_eq!(st.assignment_generation, Some(after.generation));
}

#[tokio::test]
async fn stale_checkpoint_sets_checkpoint_stale() {
    let h = setup().await;
    running(&h).await;
    let old = Checkpoint {
        id: 3,
        time: Some(jiff::Timestamp::now() - jiff::SignedDuration::from_secs(3600)),
        splits: BTreeMap::new(),
    };
    write_checkpoint(&h, &old).await;
    h.reconcile_pipeline(NAME).await.unwrap();
    let st = status(&h).await;
    assert_eq!(
        conditions(&st.conditions)["CheckpointStale"],
        ("True".into(), "NoRecentCheckpoint".into())
    );
    assert_eq!(st.last_checkpoint.as_ref().unwrap().id, 3);
    assert_eq!(
        st.phase,
        Some(PipelinePhase::Running),
        "stale is reported, not fatal"
    );

    let fresh = Checkpoint {
        id: 4,
        time: Some(jiff::Timestamp::now()),
        splits: BTreeMap::new(),
    };
    write_checkpoint(&h, &fresh).await;
    h.reconcile_pipeline(NAME).await.unwrap();
    let st = status(&h).await;
    assert_eq!(conditions(&st.conditions)["CheckpointStale"].0, "False");
    assert_eq!(st.last_checkpoint.unwrap().id, 4);
}

#[tokio::test]
async fn bounded_run_that_finished_succeeds_and_stops_its_workers() {
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
                    position: 4,
                    generation: 1,
                    finished: true,
                    ..Default::default()
                },
            )]),
        },
    )
    .await;
    h.reconcile_pipeline(NAME).await.unwrap();
    let d = h.deployment("orders-copy-worker").await.unwrap();
    assert_eq!(d.spec.unwrap().replicas, Some(0));
    let st = status(&h).await;
    assert_eq!(st.phase, Some(PipelinePhase::Succeeded));
    assert_eq!(
        conditions(&st.conditions)["Ready"],
        ("True".into(), "Succeeded".into())
    );
}

#[tokio::test]
async fn consumer_deleted_behind_the_operators_back_is_recreated_after_the_checkpoint() {
    let h = setup().await;
    running(&h).await;
    write_checkpoint(
        &h,
        &Checkpoint {
            id: 2,
            time: Some(jiff::Timestamp::now()),
            splits: BTreeMap::from([(
                "orders.eu".into(),
                SplitPosition {
                    position: 2,
                    generation: 1,
                    ..Default::default()
                },
            )]),
        },
    )
    .await;
    let js = h.nats.jetstream().await;
    let stream = js.get_stream("ORDERS").await.unwrap();
    stream
        .delete_consumer(&consumer_name(NS, NAME, "orders.eu"))
        .await
        .unwrap();
    h.reconcile_pipeline(NAME).await.unwrap();
    let info = consumer(&h, "orders.eu").await.expect("recreated");
    assert_eq!(
        info.config.deliver_policy,
        DeliverPolicy::ByStartSequence { start_sequence: 3 }
    );
    assert_eq!(info.num_pending, 1, "only what follows the checkpoint");
}

#[tokio::test]
async fn split_by_subject_follows_the_subjects_in_the_stream() {
    let h = setup().await;
    let mut spec = spec(&["orders.*"]);
    spec["source"]["jetstream"]["splitBy"] = json!("Subject");
    spec["source"]["jetstream"]["discoveryInterval"] = json!("5s");
    h.create_pipeline(pipeline(NAME, spec)).await;
    let action = h.reconcile_pipeline(NAME).await.unwrap();
    assert_eq!(
        action,
        Action::requeue(Duration::from_secs(5)),
        "discovery interval"
    );
    let names: Vec<String> = status(&h)
        .await
        .splits
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, vec!["orders.eu", "orders.us"]);
    assert!(consumer(&h, "orders.us").await.is_some());

    // A new subject appears: a new split with its own consumer.
    let js = h.nats.jetstream().await;
    js.publish("orders.apac", "{}".into())
        .await
        .unwrap()
        .await
        .unwrap();
    h.reconcile_pipeline(NAME).await.unwrap();
    let names: Vec<String> = status(&h)
        .await
        .splits
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, vec!["orders.apac", "orders.eu", "orders.us"]);
    assert_eq!(consumer(&h, "orders.apac").await.unwrap().num_pending, 1);
}

#[tokio::test]
async fn core_source_runs_without_consumers() {
    let h = setup().await;
    h.create_pipeline(pipeline(
        NAME,
        json!({
            "source": {"core": {"subjects": ["sensors.>"]}},
            "sink": {"jetstream": {"stream": "ORDERS_COPY", "subject": "copy.{{subject}}"}},
        }),
    ))
    .await;
    h.reconcile_pipeline(NAME).await.unwrap();
    let d = h
        .deployment("orders-copy-worker")
        .await
        .expect("deployment");
    assert_eq!(d.spec.unwrap().replicas, Some(1));
    let st = status(&h).await;
    assert_eq!(st.splits.len(), 1);
    assert_eq!(st.splits[0].name, "sensors.>");
    assert_eq!(st.lag, None, "no consumer, no lag");
    let js = h.nats.jetstream().await;
    let orders = js.get_stream("ORDERS").await.unwrap();
    assert_eq!(orders.cached_info().state.consumer_count, 0);
}

#[tokio::test]
async fn nats_unreachable_is_an_error_retried_with_growing_backoff() {
    let mut h = setup().await;
    h.create_pipeline(orders()).await;
    h.nats.stop();
    let p = std::sync::Arc::new(h.pipeline(NAME).await);
    let mut waits = Vec::new();
    for _ in 0..3 {
        let err = jetflow_operator::pipeline::reconcile(p.clone(), h.ctx.clone())
            .await
            .unwrap_err();
        assert_eq!(err.category(), "nats_connect", "{err}");
        let action = jetflow_operator::controller::error_policy(
            p.clone(),
            &err,
            h.ctx.clone(),
            jetflow_operator::pipeline::CONTROLLER,
        );
        waits.push(action);
    }
    assert_eq!(
        waits,
        [5, 10, 20].map(|s| Action::requeue(Duration::from_secs(s))),
        "5 s doubling"
    );
    assert_eq!(h.ctx.metrics.errors_of("pipeline", "nats_connect"), 3);
}

#[tokio::test]
async fn credentials_are_read_from_the_secret_the_connection_names() {
    let nats = jetflow_testsupport::NatsServer::start_with("authorization { token: \"s3cret\" }");
    let h = Harness::new_with_nats(nats).await;
    let client = async_nats::ConnectOptions::with_token("s3cret".into())
        .connect(h.nats.url())
        .await
        .unwrap();
    let js = async_nats::jetstream::new(client);
    nats_stream(&js, "ORDERS", &["orders.>"], Duration::from_secs(120)).await;
    nats_stream(&js, "ORDERS_COPY", &["copy.>"], Duration::from_secs(120)).await;
    let mut secret = k8s_openapi::api::core::v1::Secret::default();
    secret.metadata.name = Some("nats-token".into());
    secret.string_data = Some(BTreeMap::from([("token".into(), "s3cret".into())]));
    h.api::<k8s_openapi::api::core::v1::Secret>()
        .create(&Default::default(), &secret)
        .await
        .unwrap();

    let mut p = orders();
    p.spec.connection = Some(jetflow_crds::Connection {
        url: Some(h.nats.url()),
        token: Some(jetflow_crds::SecretKeyRef {
            name: "nats-token".into(),
            key: "token".into(),
        }),
        ..Default::default()
    });
    h.create_pipeline(p).await;
    h.reconcile_pipeline(NAME).await.unwrap();
    let stream = js.get_stream("ORDERS").await.unwrap();
    assert!(
        stream
            .consumer_info(consumer_name(NS, NAME, "orders.eu"))
            .await
            .is_ok(),
        "the operator reached NATS with the Secret's token"
    );
    let d = h.deployment("orders-copy-worker").await.unwrap();
    let mounts = d.spec.unwrap().template.spec.unwrap().containers[0]
        .volume_mounts
        .clone()
        .unwrap();
    assert!(
        mounts
            .iter()
            .any(|m| m.mount_path == "/etc/jetflow/secrets/nats-token")
    );
    h.assert_calls_permitted();
}

/// The connections nats-server has open under `name` (its monitoring endpoint).
fn connections_named(nats: &jetflow_testsupport::NatsServer, name: &str) -> usize {
    let addr = format!("127.0.0.1:{}", nats.http_port());
    let body = jetflow_testsupport::http::get_ok(&addr, "/connz?limit=1000").expect("/connz");
    let connz: serde_json::Value = serde_json::from_str(&body).unwrap();
    connz["connections"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["name"] == name)
        .count()
}

#[tokio::test]
async fn a_rotated_secret_replaces_the_connection_and_closes_the_old_one() {
    let nats = jetflow_testsupport::NatsServer::start_with("authorization { token: \"s3cret\" }");
    let h = Harness::new_with_nats(nats).await;
    let secrets = h.api::<k8s_openapi::api::core::v1::Secret>();
    let mut secret = k8s_openapi::api::core::v1::Secret::default();
    secret.metadata.name = Some("nats-token".into());
    secret.data = Some(BTreeMap::from([(
        "token".into(),
        k8s_openapi::ByteString(b"s3cret".to_vec()),
    )]));
    secrets.create(&Default::default(), &secret).await.unwrap();
    let conn = jetflow_crds::Connection {
        url: Some(h.nats.url()),
        token: Some(jetflow_crds::SecretKeyRef {
            name: "nats-token".into(),
            key: "token".into(),
        }),
        ..Default::default()
    };
    let pool = &h.ctx.nats;
    for rotation in 0..3 {
        let js = pool
            .jetstream(&h.raw, NS, Some(&conn))
            .await
            .unwrap_or_else(|e| panic!("rotation {rotation}: {e}"));
        // The client works: JetStream answers through it.
        js.query_account().await.unwrap();
        // The same Secret again: the same client.
        pool.jetstream(&h.raw, NS, Some(&conn)).await.unwrap();
        assert_eq!(pool.open_clients(), 1);
        // Rotate: a new resource version (the server accepts the same token).
        let mut live = secrets.get("nats-token").await.unwrap();
        live.metadata
            .labels
            .get_or_insert_default()
            .insert("rotation".into(), rotation.to_string());
        secrets
            .replace("nats-token", &Default::default(), &live)
            .await
            .unwrap();
    }
    pool.jetstream(&h.raw, NS, Some(&conn)).await.unwrap();
    // Four versions of the Secret were used; one connection is left open.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let open = connections_named(&h.nats, "jetflow-operator");
        if open == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{open} operator connections open after three rotations"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(pool.open_clients(), 1);
}
