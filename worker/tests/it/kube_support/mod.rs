//! The in-memory Kubernetes API the in-cluster store tests run against (kube-fake-client:
//! objects, resourceVersions, 409 on a stale replace), with every request a worker's client
//! sends recorded together with the status the API answered, so that tests can see conflicts
//! happen and check the worker's calls against its Role. [`FakeApi::serve`] serves it over
//! HTTP with a kubeconfig, for worker processes. The fake has no watch: a watch request is
//! answered like a list, which a client's watch cannot decode, so workers on it run on their
//! fallback of polling (the local control plane serves real watches).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use jetflow_crds::assignment::Assignment;
use jetflow_crds::checkpoint::Checkpoint;
use jetflow_crds::names;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};

/// The namespace the tests use.
pub const NS: &str = "shop";

/// One request a worker's client sent, and the answer's status code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    /// HTTP method.
    pub method: String,
    /// Request path.
    pub path: String,
    /// Query string.
    pub query: String,
    /// Status code of the answer (0 when the request failed before an answer).
    pub status: u16,
}

/// The fake API and the clients on it.
pub struct FakeApi {
    /// The test's own client (what the operator and users would do).
    pub raw: kube::Client,
    calls: Arc<Mutex<Vec<Call>>>,
}

impl FakeApi {
    /// An empty fake API.
    pub async fn new() -> FakeApi {
        let raw = kube_fake_client::ClientBuilder::new()
            .build()
            .await
            .expect("fake client");
        FakeApi {
            raw,
            calls: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// A client for a worker: its requests go to the same fake API and are recorded.
    pub fn worker_client(&self) -> kube::Client {
        let raw = self.raw.clone();
        let calls = self.calls.clone();
        let service = tower::service_fn(move |req: http::Request<kube::client::Body>| {
            let raw = raw.clone();
            let calls = calls.clone();
            async move {
                let method = req.method().to_string();
                let path = req.uri().path().to_owned();
                let query = req.uri().query().unwrap_or_default().to_owned();
                let result = raw.send(req).await;
                let status = result.as_ref().map_or(0, |r| r.status().as_u16());
                calls.lock().unwrap().push(Call {
                    method,
                    path,
                    query,
                    status,
                });
                result
            }
        });
        kube::Client::new(service, NS)
    }

    /// Serves the API over plain HTTP on a loopback port, every request recorded like a
    /// worker client's, and writes a kubeconfig for it (namespace [`NS`], a bearer token) into
    /// `dir`; returns the kubeconfig's path. The server runs until the test's runtime ends.
    pub async fn serve(&self, dir: &std::path::Path) -> std::path::PathBuf {
        let client = self.worker_client();
        let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
            let client = client.clone();
            async move {
                let (parts, body) = req.into_parts();
                let body = axum::body::to_bytes(body, usize::MAX)
                    .await
                    .unwrap_or_default();
                let req = http::Request::from_parts(parts, kube::client::Body::from(body.to_vec()));
                match client.send(req).await {
                    Ok(response) => response.map(axum::body::Body::new),
                    Err(e) => http::Response::builder()
                        .status(500)
                        .body(axum::body::Body::from(e.to_string()))
                        .unwrap(),
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let path = dir.join("kubeconfig");
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster: {{server: \"http://{addr}\"}}
users:
- name: worker
  user: {{token: worker-token}}
contexts:
- name: fake
  context: {{cluster: fake, user: worker, namespace: {NS}}}
current-context: fake
"
            ),
        )
        .unwrap();
        path
    }

    /// Every request the worker clients sent so far.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// How many worker requests were answered with `status`.
    pub fn count_status(&self, status: u16) -> usize {
        self.calls().iter().filter(|c| c.status == status).count()
    }

    /// ConfigMaps in the test namespace.
    pub fn config_maps(&self) -> Api<ConfigMap> {
        Api::namespaced(self.raw.clone(), NS)
    }

    /// Creates the checkpoint ConfigMap of `pipeline` as the operator does: no owner, the
    /// pipeline label, an annotation, and the empty checkpoint.
    pub async fn create_checkpoint(&self, pipeline: &str) -> ConfigMap {
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some(names::checkpoint_config_map(pipeline)),
                namespace: Some(NS.to_owned()),
                labels: Some(BTreeMap::from([(
                    names::PIPELINE_LABEL.to_owned(),
                    pipeline.to_owned(),
                )])),
                annotations: Some(BTreeMap::from([(
                    "example.com/team".to_owned(),
                    "payments".to_owned(),
                )])),
                ..Default::default()
            },
            data: Some(BTreeMap::from([(
                names::CHECKPOINT_KEY.to_owned(),
                serde_json::to_string(&Checkpoint::default()).unwrap(),
            )])),
            ..Default::default()
        };
        self.config_maps()
            .create(&PostParams::default(), &cm)
            .await
            .expect("create checkpoint ConfigMap")
    }

    /// What the operator does on a change of `jetflow.io/reset` to `value`: replaces the
    /// checkpoint by `checkpoint`, recording the reset value it reflects.
    pub async fn reset_checkpoint(&self, pipeline: &str, value: &str, checkpoint: &Checkpoint) {
        let patch = serde_json::json!({
            "metadata": {"annotations": {names::RESET_APPLIED_ANNOTATION: value}},
            "data": {names::CHECKPOINT_KEY: serde_json::to_string(checkpoint).unwrap()},
        });
        self.config_maps()
            .patch(
                &names::checkpoint_config_map(pipeline),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .expect("reset checkpoint");
    }

    /// The checkpoint as stored in `pipeline`'s ConfigMap.
    pub async fn checkpoint(&self, pipeline: &str) -> Checkpoint {
        let cm = self
            .config_maps()
            .get(&names::checkpoint_config_map(pipeline))
            .await
            .expect("checkpoint ConfigMap");
        serde_json::from_str(&cm.data.unwrap()[names::CHECKPOINT_KEY]).expect("checkpoint JSON")
    }

    /// Publishes `assignment` into `pipeline`'s assignment ConfigMap, as the operator does
    /// (created on first use, then patched).
    pub async fn publish_assignment(&self, pipeline: &str, assignment: &Assignment) {
        let name = names::assignment_config_map(pipeline);
        let data = BTreeMap::from([(
            names::ASSIGNMENT_KEY.to_owned(),
            serde_json::to_string(assignment).unwrap(),
        )]);
        let api = self.config_maps();
        if api.get_opt(&name).await.unwrap().is_some() {
            let patch = serde_json::json!({ "data": data });
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .expect("patch assignment");
        } else {
            let cm = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(name),
                    namespace: Some(NS.to_owned()),
                    ..Default::default()
                },
                data: Some(data),
                ..Default::default()
            };
            api.create(&PostParams::default(), &cm)
                .await
                .expect("create assignment");
        }
    }
}
