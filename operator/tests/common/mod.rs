//! Test harness: an in-memory Kubernetes API (kube-fake-client: objects, resource versions,
//! status, conflicts, server-side apply) and a real nats-server, with every request the
//! operator sends recorded, so that tests can count writes and check each call against the
//! operator's permission table.
//!
//! A server-side apply that would change nothing is answered with the object as it is, without
//! a write, as a real API server (and the local control plane) does; the fake alone would store
//! it again under a new resourceVersion and generation.
//!
//! Two clients share one fake API: `ctx.client` (the operator's, recorded) and `raw` (the
//! test's own, for what users, kubelets and the deployment controller would do).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jetflow_crds::{Pipeline, PipelineStatus, Stream, StreamStatus};
use jetflow_operator::controller::{Context, NatsPool, Settings};
use jetflow_operator::metrics::Metrics;
use jetflow_operator::permissions::{self, Scope};
use jetflow_testsupport::NatsServer;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, PodCondition, PodStatus, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube_fake_client::ClientBuilder;
use serde_json::{Value, json};

/// The namespace the tests use.
pub const NS: &str = "shop";

/// One request the operator sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    /// get, list, watch, create, update, patch, delete.
    pub verb: String,
    /// API group, "" for core.
    pub group: String,
    /// Resource, with `/subresource`.
    pub resource: String,
    /// Object name, if any.
    pub name: Option<String>,
    /// Whether the server changed something (false for a server-side apply that changed
    /// nothing).
    pub changed: bool,
}

impl Call {
    fn parse(method: &str, path: &str, query: &str) -> Call {
        let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let (group, rest) = if parts.first() == Some(&"api") {
            (String::new(), &parts[2..])
        } else {
            (parts[1].to_owned(), &parts[3..])
        };
        let rest = if rest.first() == Some(&"namespaces") && rest.len() > 2 {
            &rest[2..]
        } else {
            rest
        };
        let mut resource = rest[0].to_owned();
        let name = rest.get(1).map(|s| (*s).to_owned());
        if let Some(sub) = rest.get(2) {
            resource = format!("{resource}/{sub}");
        }
        let verb = match (method, name.is_some()) {
            ("GET", true) => "get",
            ("GET", false) if query.contains("watch=true") => "watch",
            ("GET", false) => "list",
            ("POST", _) => "create",
            ("PUT", _) => "update",
            ("PATCH", _) => "patch",
            ("DELETE", true) => "delete",
            ("DELETE", false) => "deletecollection",
            _ => "unknown",
        };
        Call {
            verb: verb.into(),
            group,
            resource,
            name,
            changed: true,
        }
    }

    /// Whether the call changes something.
    pub fn is_write(&self) -> bool {
        self.changed && !matches!(self.verb.as_str(), "get" | "list" | "watch")
    }
}

type HookFn = Box<dyn FnOnce(kube::Client) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// Runs `action` with the raw client just before the first operator request that matches.
struct Hook {
    verb: &'static str,
    name: String,
    action: HookFn,
}

/// The fake API, the NATS server and the operator's context.
pub struct Harness {
    pub nats: NatsServer,
    pub raw: kube::Client,
    pub ctx: Arc<Context>,
    pub calls: Arc<Mutex<Vec<Call>>>,
    hook: Arc<Mutex<Option<Hook>>>,
}

/// The object as it is when `req` is a server-side apply that would change nothing in it (the
/// fake applies as a JSON merge), with the request to send otherwise. A resourceVersion the
/// apply is conditional on must still match, as on a real server.
async fn unchanged_apply(
    raw: &kube::Client,
    req: http::Request<kube::client::Body>,
) -> Result<(http::Request<kube::client::Body>, Option<Value>), kube::Error> {
    let apply = req.method() == http::Method::PATCH
        && req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("apply-patch"));
    if !apply {
        return Ok((req, None));
    }
    let (parts, body) = req.into_parts();
    let bytes = body.collect_bytes().await?;
    let applied: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let get = http::Request::get(parts.uri.path())
        .body(Vec::new())
        .expect("a GET request");
    let unchanged = match raw.request::<Value>(get).await {
        Ok(current) => {
            let strip = |v: &Value| {
                let mut v = v.clone();
                if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
                    meta.remove("managedFields");
                    meta.remove("resourceVersion");
                }
                v
            };
            let pinned = applied.pointer("/metadata/resourceVersion");
            let mut merged = current.clone();
            json_patch::merge(&mut merged, &applied);
            (pinned.is_none() || pinned == current.pointer("/metadata/resourceVersion"))
                && strip(&merged) == strip(&current)
        }
        .then_some(current),
        Err(_) => None,
    };
    let req = http::Request::from_parts(parts, kube::client::Body::from(bytes.to_vec()));
    Ok((req, unchanged))
}

fn builder() -> ClientBuilder {
    ClientBuilder::new()
        .with_resource::<Pipeline>()
        .with_resource::<Stream>()
}

impl Harness {
    /// A fresh fake API and nats-server.
    pub async fn new() -> Harness {
        Self::new_with_nats(NatsServer::start()).await
    }

    /// A fresh fake API with the given nats-server.
    pub async fn new_with_nats(nats: NatsServer) -> Harness {
        let raw = builder().build().await.expect("fake client");
        Self::with(nats, raw)
    }

    fn with(nats: NatsServer, raw: kube::Client) -> Harness {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let hook: Arc<Mutex<Option<Hook>>> = Arc::new(Mutex::new(None));
        let recorded = {
            let raw = raw.clone();
            let calls = calls.clone();
            let hook = hook.clone();
            tower::service_fn(move |req: http::Request<kube::client::Body>| {
                let raw = raw.clone();
                let calls = calls.clone();
                let hook = hook.clone();
                async move {
                    let mut call = Call::parse(
                        req.method().as_str(),
                        req.uri().path(),
                        req.uri().query().unwrap_or(""),
                    );
                    let (req, unchanged) = unchanged_apply(&raw, req).await?;
                    if let Some(current) = unchanged {
                        call.changed = false;
                        calls.lock().unwrap().push(call);
                        let body = serde_json::to_vec(&current).expect("JSON");
                        return Ok(http::Response::new(kube::client::Body::from(body)));
                    }
                    calls.lock().unwrap().push(call.clone());
                    let armed = {
                        let mut slot = hook.lock().unwrap();
                        let matches = slot.as_ref().is_some_and(|h| {
                            h.verb == call.verb && call.name.as_deref() == Some(h.name.as_str())
                        });
                        if matches { slot.take() } else { None }
                    };
                    if let Some(h) = armed {
                        (h.action)(raw.clone()).await;
                    }
                    raw.send(req).await
                }
            })
        };
        let client = kube::Client::new(recorded, "default");
        let settings = Settings {
            worker_image: "ghcr.io/jetflow-io/jetflow:test".into(),
            pipeline_resync: Duration::from_secs(15),
            stream_resync: Duration::from_secs(60),
            min_checkpoint_stale: Duration::from_secs(60),
        };
        let ctx = Arc::new(Context::new(
            client,
            Arc::new(Metrics::new()),
            NatsPool::new(nats.url()),
            settings,
            Some("operator-0".into()),
        ));
        Harness {
            nats,
            raw,
            ctx,
            calls,
            hook,
        }
    }

    /// Runs `action` with the raw client right before the operator's first `verb` request on an
    /// object named `name` (to make a concurrent write happen at that moment).
    pub fn before_request<F, Fut>(&self, verb: &'static str, name: &str, action: F)
    where
        F: FnOnce(kube::Client) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        *self.hook.lock().unwrap() = Some(Hook {
            verb,
            name: name.to_owned(),
            action: Box::new(move |c| Box::pin(action(c))),
        });
    }

    /// Forgets the recorded calls.
    pub fn clear_calls(&self) {
        self.calls.lock().unwrap().clear();
    }

    /// The recorded writes.
    pub fn writes(&self) -> Vec<Call> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.is_write())
            .cloned()
            .collect()
    }

    /// Asserts that every recorded call is in the operator's permission table (cluster scope;
    /// the Lease has its own test).
    pub fn assert_calls_permitted(&self) {
        for call in self.calls.lock().unwrap().iter() {
            assert!(
                permissions::allows(&call.group, &call.resource, &call.verb, Scope::Cluster),
                "the operator sent {call:?}, which permissions::PERMISSIONS (and so the chart) does not grant"
            );
        }
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.raw.clone(), NS)
    }

    /// Creates a Pipeline as `kubectl apply` would, with the operator's finalizer already in
    /// place (the fake's JSON patch cannot test a missing path, which kube-runtime's
    /// finalizer-add patch relies on).
    pub async fn create_pipeline(&self, mut p: Pipeline) -> Pipeline {
        p.metadata.namespace = Some(NS.into());
        p.metadata.finalizers = Some(vec![jetflow_operator::FINALIZER.into()]);
        p.status = Some(PipelineStatus::default());
        self.api::<Pipeline>()
            .create(&PostParams::default(), &p)
            .await
            .expect("create pipeline")
    }

    /// Creates a Stream, like [`Harness::create_pipeline`].
    pub async fn create_stream(&self, mut s: Stream) -> Stream {
        s.metadata.namespace = Some(NS.into());
        s.metadata.finalizers = Some(vec![jetflow_operator::FINALIZER.into()]);
        s.status = Some(StreamStatus::default());
        self.api::<Stream>()
            .create(&PostParams::default(), &s)
            .await
            .expect("create stream")
    }

    /// Reconciles the Pipeline `name` as it is now.
    pub async fn reconcile_pipeline(&self, name: &str) -> jetflow_operator::Result<Action> {
        let p = self.api::<Pipeline>().get(name).await.expect("pipeline");
        jetflow_operator::pipeline::reconcile(Arc::new(p), self.ctx.clone()).await
    }

    /// Reconciles the Stream `name` as it is now.
    pub async fn reconcile_stream(&self, name: &str) -> jetflow_operator::Result<Action> {
        let s = self.api::<Stream>().get(name).await.expect("stream");
        jetflow_operator::stream::reconcile(Arc::new(s), self.ctx.clone()).await
    }

    pub async fn pipeline(&self, name: &str) -> Pipeline {
        self.api::<Pipeline>().get(name).await.expect("pipeline")
    }

    pub async fn stream(&self, name: &str) -> Stream {
        self.api::<Stream>().get(name).await.expect("stream")
    }

    /// Merge-patches a Pipeline's metadata and spec, as `kubectl apply` of an edit would.
    pub async fn edit_pipeline(&self, name: &str, patch: Value) {
        self.api::<Pipeline>()
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("edit pipeline");
    }

    pub async fn edit_stream(&self, name: &str, patch: Value) {
        self.api::<Stream>()
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("edit stream");
    }

    pub async fn config_map(&self, name: &str) -> Option<ConfigMap> {
        self.api::<ConfigMap>()
            .get_opt(name)
            .await
            .expect("read configmap")
    }

    pub async fn deployment(&self, name: &str) -> Option<Deployment> {
        self.api::<Deployment>()
            .get_opt(name)
            .await
            .expect("read deployment")
    }

    /// What the deployment controller and the kubelet would do: `ready` pods named
    /// `<deployment>-<i>` exist and are ready (pods above `ready` are removed), and the
    /// Deployment's status says so.
    pub async fn run_workers(&self, pipeline: &str, ready: usize) {
        let deployment_name = format!("{pipeline}-worker");
        let pods = self.api::<Pod>();
        let existing = pods
            .list(&ListParams::default().labels(&format!("jetflow.io/pipeline={pipeline}")))
            .await
            .expect("list pods");
        for pod in existing.items {
            let name = pod.metadata.name.clone().unwrap();
            let index: usize = name.rsplit('-').next().unwrap().parse().unwrap();
            if index >= ready {
                pods.delete(&name, &Default::default())
                    .await
                    .expect("delete pod");
            }
        }
        let deployment = self.deployment(&deployment_name).await.expect("deployment");
        let labels = deployment
            .spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .clone();
        for i in 0..ready {
            let name = format!("{deployment_name}-{i}");
            if pods.get_opt(&name).await.unwrap().is_some() {
                continue;
            }
            let mut pod = Pod::default();
            pod.metadata.name = Some(name);
            pod.metadata.labels = labels.clone();
            pod.status = Some(PodStatus {
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            });
            pods.create(&PostParams::default(), &pod)
                .await
                .expect("create pod");
        }
        let n = ready as i32;
        self.api::<Deployment>()
            .patch_status(
                &deployment_name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": {
                    "observedGeneration": deployment.metadata.generation,
                    "replicas": n, "readyReplicas": n, "updatedReplicas": n, "availableReplicas": n,
                }})),
            )
            .await
            .expect("deployment status");
    }

    /// The reasons of the Events on objects named `name`, in order.
    pub async fn event_reasons(&self, name: &str) -> Vec<String> {
        let events: Api<Event> = Api::namespaced(self.raw.clone(), NS);
        let mut list: Vec<Event> = events
            .list(&ListParams::default())
            .await
            .expect("events")
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .collect();
        list.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
        list.into_iter().filter_map(|e| e.reason).collect()
    }

    /// What the API server does on `kubectl delete` of an object with a finalizer: it stays,
    /// with a deletion timestamp, until the finalizer is removed. (The fake removes objects at
    /// once, so the tests rebuild it with the timestamp set, keeping every object, uid and
    /// resource version.)
    pub async fn mark_deleted<K>(self, name: &str) -> Harness
    where
        K: kube::Resource<DynamicType = ()>,
    {
        let mut objects: Vec<Value> = Vec::new();
        async fn all<T>(raw: &kube::Client, out: &mut Vec<Value>)
        where
            T: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
                + Clone
                + serde::de::DeserializeOwned
                + serde::Serialize
                + std::fmt::Debug,
            T::DynamicType: Default,
        {
            let api: Api<T> = Api::all(raw.clone());
            for item in api.list(&ListParams::default()).await.expect("list").items {
                out.push(serde_json::to_value(item).expect("encode"));
            }
        }
        all::<Pipeline>(&self.raw, &mut objects).await;
        all::<Stream>(&self.raw, &mut objects).await;
        all::<ConfigMap>(&self.raw, &mut objects).await;
        all::<Deployment>(&self.raw, &mut objects).await;
        all::<ServiceAccount>(&self.raw, &mut objects).await;
        all::<Role>(&self.raw, &mut objects).await;
        all::<RoleBinding>(&self.raw, &mut objects).await;
        all::<Pod>(&self.raw, &mut objects).await;
        all::<Event>(&self.raw, &mut objects).await;
        for object in &mut objects {
            if object["kind"] == K::kind(&()).as_ref() && object["metadata"]["name"] == name {
                object["metadata"]["deletionTimestamp"] =
                    serde_json::to_value(Time(jiff::Timestamp::now())).unwrap();
            }
        }
        let raw = builder()
            .with_runtime_objects(objects)
            .build()
            .await
            .expect("fake client");
        let Harness { nats, .. } = self;
        Harness::with(nats, raw)
    }
}

/// A pipeline from a JSON spec.
pub fn pipeline(name: &str, spec: Value) -> Pipeline {
    Pipeline::new(name, serde_json::from_value(spec).expect("pipeline spec"))
}

/// A Stream resource from a JSON spec.
pub fn stream(name: &str, spec: Value) -> Stream {
    Stream::new(name, serde_json::from_value(spec).expect("stream spec"))
}

/// Creates a JetStream stream directly in NATS.
pub async fn nats_stream(
    js: &async_nats::jetstream::Context,
    name: &str,
    subjects: &[&str],
    duplicate_window: Duration,
) {
    js.create_stream(async_nats::jetstream::stream::Config {
        name: name.into(),
        subjects: subjects.iter().map(|s| (*s).to_owned()).collect(),
        duplicate_window,
        ..Default::default()
    })
    .await
    .expect("create stream");
}

/// The conditions of a status, by type: (status, reason).
pub fn conditions(
    conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
) -> BTreeMap<String, (String, String)> {
    conditions
        .iter()
        .map(|c| (c.type_.clone(), (c.status.clone(), c.reason.clone())))
        .collect()
}
