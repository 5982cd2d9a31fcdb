//! Pipelines for unit tests.

use jetflow_crds::Pipeline;
use jetflow_crds::pipeline::{PipelineSpec, Step};

use super::build::{Inputs, configmap::test_owner};

/// `shop/orders-copy`: ORDERS (two filter subjects) through one jq map into ORDERS_COPY.
pub fn pipeline() -> Pipeline {
    let spec: PipelineSpec = serde_json::from_value(serde_json::json!({
        "source": {"jetstream": {"stream": "ORDERS", "filterSubjects": ["orders.eu", "orders.us"]}},
        "sink": {"jetstream": {"stream": "ORDERS_COPY", "subject": "copy.{{subject}}"}},
        "parallelism": 2,
    }))
    .expect("a valid spec");
    let mut p = Pipeline::new("orders-copy", spec);
    p.metadata.namespace = Some("shop".into());
    p.metadata.uid = Some(test_owner().uid);
    p.spec.steps = vec![Step {
        map: Some(".".into()),
        ..Default::default()
    }];
    p
}

/// Build inputs for `p`.
pub fn inputs(p: &Pipeline) -> Inputs<'_> {
    Inputs {
        pipeline: p,
        name: "orders-copy",
        namespace: "shop",
        owner: test_owner(),
        worker_image: "ghcr.io/jetflow-io/jetflow:0.1.0",
        default_nats_url: "nats://nats.nats.svc:4222",
        replicas: p.spec.parallelism,
    }
}
