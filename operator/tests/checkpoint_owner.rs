//! Whose checkpoint ConfigMap it is: a Pipeline's own (created by one of its reconciles, even
//! one that did not finish) is used without a word; one another Pipeline of the same name left
//! is adopted with the `Adopted` Event, and is the new Pipeline's own from then on.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Harness, NS, nats_stream, pipeline};
use jetflow_crds::checkpoint::Checkpoint;
use jetflow_crds::names;
use jetflow_operator::pipeline::build::PIPELINE_UID_ANNOTATION;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use kube::api::PostParams;
use serde_json::json;

const NAME: &str = "orders-copy";

fn orders() -> jetflow_crds::Pipeline {
    pipeline(
        NAME,
        json!({
            "source": {"jetstream": {"stream": "ORDERS", "filterSubjects": ["orders.eu"]}},
            "sink": {"jetstream": {"stream": "ORDERS_COPY", "subject": "copy.{{subject}}"}},
            "checkpoint": {"interval": "5s"},
        }),
    )
}

async fn setup() -> Harness {
    let h = Harness::new().await;
    let js = h.nats.jetstream().await;
    nats_stream(&js, "ORDERS", &["orders.>"], Duration::from_secs(120)).await;
    nats_stream(&js, "ORDERS_COPY", &["copy.>"], Duration::from_secs(120)).await;
    h
}

fn adopted(reasons: &[String]) -> bool {
    reasons.iter().any(|r| r == "Adopted")
}

#[tokio::test]
async fn a_first_reconcile_cut_short_after_creating_the_checkpoint_adopts_nothing() {
    let h = setup().await;
    let created = h.create_pipeline(orders()).await;
    // The source stream goes away right as the checkpoint ConfigMap is created: the reconcile
    // fails after that (making the consumers), before it reports any status.
    let js = h.nats.jetstream().await;
    let cm_name = names::checkpoint_config_map(NAME);
    {
        let js = js.clone();
        h.before_request("get", &cm_name, move |_| async move {
            js.delete_stream("ORDERS").await.expect("delete ORDERS");
        });
    }
    assert!(
        h.reconcile_pipeline(NAME).await.is_err(),
        "the first reconcile fails without its source stream"
    );
    let cm = h
        .config_map(&cm_name)
        .await
        .expect("the checkpoint was created");
    assert_eq!(
        cm.annotations().get(PIPELINE_UID_ANNOTATION),
        created.metadata.uid.as_ref(),
        "the checkpoint names the Pipeline that created it"
    );

    nats_stream(&js, "ORDERS", &["orders.>"], Duration::from_secs(120)).await;
    h.reconcile_pipeline(NAME)
        .await
        .expect("the second reconcile");
    let reasons = h.event_reasons(NAME).await;
    assert!(
        !adopted(&reasons),
        "the Pipeline's own checkpoint reported as left by an earlier Pipeline: {reasons:?}"
    );
}

#[tokio::test]
async fn a_checkpoint_left_by_a_deleted_pipeline_of_the_same_name_is_adopted_once() {
    let h = setup().await;
    let earlier = ConfigMap {
        metadata: ObjectMeta {
            name: Some(names::checkpoint_config_map(NAME)),
            namespace: Some(NS.into()),
            annotations: Some(BTreeMap::from([(
                PIPELINE_UID_ANNOTATION.to_owned(),
                "0b9f0c52-0000-4000-8000-00000000dead".to_owned(),
            )])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            names::CHECKPOINT_KEY.to_owned(),
            serde_json::to_string(&Checkpoint::default()).unwrap(),
        )])),
        ..Default::default()
    };
    h.api::<ConfigMap>()
        .create(&PostParams::default(), &earlier)
        .await
        .expect("the earlier Pipeline's checkpoint");
    let created = h.create_pipeline(orders()).await;
    h.reconcile_pipeline(NAME).await.expect("reconcile");
    let reasons = h.event_reasons(NAME).await;
    assert!(adopted(&reasons), "{reasons:?}");
    let cm = h
        .config_map(&names::checkpoint_config_map(NAME))
        .await
        .expect("checkpoint");
    assert_eq!(
        cm.annotations().get(PIPELINE_UID_ANNOTATION),
        created.metadata.uid.as_ref(),
        "adopted, the checkpoint is the new Pipeline's own"
    );
}
