//! The resources the server knows: the built-in kinds jetflow, kube-rs and kubectl use, and
//! every CustomResourceDefinition given at start or created later. Lookups never fail loudly:
//! an unknown resource is `None`, which the router turns into a 404.

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// Where a CRD's scale subresource reads and writes its numbers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScalePaths {
    /// `.spec.replicas`
    pub spec_replicas: String,
    /// `.status.replicas`
    pub status_replicas: String,
    /// `.status.selector`, if any.
    pub label_selector: Option<String>,
}

/// A printer column of a CRD (`additionalPrinterColumns`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrinterColumn {
    /// Column header.
    pub name: String,
    /// `string`, `integer`, `number`, `boolean`, `date`.
    pub type_: String,
    /// Simple JSONPath, `.status.phase`.
    pub json_path: String,
    /// Shown only with `-o wide` when above 0.
    pub priority: i64,
}

/// One resource of the API.
#[derive(Clone, Debug)]
pub struct ResourceInfo {
    /// API group, empty for core.
    pub group: String,
    /// The served version.
    pub version: String,
    /// Plural name, `pipelines`.
    pub plural: String,
    /// Singular name, `pipeline`.
    pub singular: String,
    /// Kind, `Pipeline`.
    pub kind: String,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// Short names, `jfp`.
    pub short_names: Vec<String>,
    /// Categories, `all`.
    pub categories: Vec<String>,
    /// Whether `status` is a subresource (writes of the main resource ignore status).
    pub status: bool,
    /// The scale subresource, if any.
    pub scale: Option<ScalePaths>,
    /// Printer columns (CRDs).
    pub columns: Vec<PrinterColumn>,
    /// Other subresources (`log`, `token`).
    pub extra_subresources: Vec<&'static str>,
    /// Whether this is a custom resource (admission applies).
    pub custom: bool,
    /// Verbs served (`create`, `token` only resources are not stored).
    pub verbs: Vec<&'static str>,
}

const ALL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

impl ResourceInfo {
    /// `group/version` or `version` for core.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `pipelines.jetflow.io` or `configmaps`.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn builtin(
        group: &str,
        version: &str,
        plural: &str,
        kind: &str,
        namespaced: bool,
        short_names: &[&str],
        status: bool,
        all: bool,
    ) -> Self {
        Self {
            group: group.into(),
            version: version.into(),
            plural: plural.into(),
            singular: kind.to_lowercase(),
            kind: kind.into(),
            namespaced,
            short_names: short_names.iter().map(|s| s.to_string()).collect(),
            categories: if all { vec!["all".into()] } else { vec![] },
            status,
            scale: None,
            columns: Vec::new(),
            extra_subresources: Vec::new(),
            custom: false,
            verbs: ALL_VERBS.to_vec(),
        }
    }

    /// The resource a CRD declares (its first served version), `None` when it is malformed.
    pub fn from_crd(crd: &Value) -> Option<Self> {
        let spec = crd.get("spec")?;
        let names = spec.get("names")?;
        let versions = spec.get("versions")?.as_array()?;
        let version = versions
            .iter()
            .find(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
            .or_else(|| {
                versions
                    .iter()
                    .find(|v| v.get("served").and_then(Value::as_bool) != Some(false))
            })
            .or_else(|| versions.first())?;
        let strings = |v: Option<&Value>| -> Vec<String> {
            v.and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        let kind = names.get("kind")?.as_str()?.to_string();
        let subresources = version
            .get("subresources")
            .or_else(|| spec.get("subresources"));
        let scale = subresources
            .and_then(|s| s.get("scale"))
            .map(|s| ScalePaths {
                spec_replicas: s
                    .get("specReplicasPath")
                    .and_then(Value::as_str)
                    .unwrap_or(".spec.replicas")
                    .into(),
                status_replicas: s
                    .get("statusReplicasPath")
                    .and_then(Value::as_str)
                    .unwrap_or(".status.replicas")
                    .into(),
                label_selector: s
                    .get("labelSelectorPath")
                    .and_then(Value::as_str)
                    .map(String::from),
            });
        let columns = version
            .get("additionalPrinterColumns")
            .and_then(Value::as_array)
            .map(|cols| {
                cols.iter()
                    .filter_map(|c| {
                        Some(PrinterColumn {
                            name: c.get("name")?.as_str()?.into(),
                            type_: c
                                .get("type")
                                .and_then(Value::as_str)
                                .unwrap_or("string")
                                .into(),
                            json_path: c.get("jsonPath")?.as_str()?.into(),
                            priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        Some(Self {
            group: spec.get("group")?.as_str()?.into(),
            version: version.get("name")?.as_str()?.into(),
            plural: names.get("plural")?.as_str()?.into(),
            singular: names
                .get("singular")
                .and_then(Value::as_str)
                .map(String::from)
                .unwrap_or_else(|| kind.to_lowercase()),
            kind,
            namespaced: spec.get("scope").and_then(Value::as_str) != Some("Cluster"),
            short_names: strings(names.get("shortNames")),
            categories: strings(names.get("categories")),
            status: subresources.and_then(|s| s.get("status")).is_some(),
            scale,
            columns,
            extra_subresources: Vec::new(),
            custom: true,
            verbs: ALL_VERBS.to_vec(),
        })
    }

    fn api_resource(&self) -> Value {
        json!({
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": self.verbs,
            "shortNames": self.short_names,
            "categories": self.categories,
            "storageVersionHash": "",
        })
    }

    fn sub_resources(&self) -> Vec<(String, &'static str, Vec<&'static str>, Value)> {
        let mut out = Vec::new();
        if self.status {
            out.push((
                "status".to_string(),
                "",
                vec!["get", "patch", "update"],
                json!({"kind": self.kind}),
            ));
        }
        if self.scale.is_some() {
            out.push((
                "scale".to_string(),
                "",
                vec!["get", "patch", "update"],
                json!({"group": "autoscaling", "version": "v1", "kind": "Scale"}),
            ));
        }
        for sub in &self.extra_subresources {
            let (verbs, kind) = match *sub {
                "token" => (
                    vec!["create"],
                    json!({"group": "authentication.k8s.io", "version": "v1", "kind": "TokenRequest"}),
                ),
                "log" => (vec!["get"], json!({"kind": "Pod"})),
                _ => (vec!["get"], json!({"kind": self.kind})),
            };
            out.push((sub.to_string(), "", verbs, kind));
        }
        out
    }
}

/// Every resource the server serves, by (group, plural).
#[derive(Clone, Debug, Default)]
pub struct Registry {
    resources: BTreeMap<(String, String), ResourceInfo>,
}

impl Registry {
    /// The built-in resources.
    pub fn builtin() -> Self {
        let mut r = Self::default();
        let b = ResourceInfo::builtin;
        r.add(b(
            "",
            "v1",
            "namespaces",
            "Namespace",
            false,
            &["ns"],
            true,
            false,
        ));
        let mut pods = b("", "v1", "pods", "Pod", true, &["po"], true, true);
        pods.extra_subresources = vec!["log"];
        r.add(pods);
        r.add(b(
            "",
            "v1",
            "configmaps",
            "ConfigMap",
            true,
            &["cm"],
            false,
            false,
        ));
        r.add(b("", "v1", "secrets", "Secret", true, &[], false, false));
        let mut sa = b(
            "",
            "v1",
            "serviceaccounts",
            "ServiceAccount",
            true,
            &["sa"],
            false,
            false,
        );
        sa.extra_subresources = vec!["token"];
        r.add(sa);
        r.add(b(
            "",
            "v1",
            "services",
            "Service",
            true,
            &["svc"],
            true,
            true,
        ));
        r.add(b("", "v1", "events", "Event", true, &["ev"], false, false));
        r.add(b(
            "events.k8s.io",
            "v1",
            "events",
            "Event",
            true,
            &["ev"],
            false,
            false,
        ));
        let mut deployments = b(
            "apps",
            "v1",
            "deployments",
            "Deployment",
            true,
            &["deploy"],
            true,
            true,
        );
        deployments.scale = Some(ScalePaths {
            spec_replicas: ".spec.replicas".into(),
            status_replicas: ".status.replicas".into(),
            label_selector: None,
        });
        r.add(deployments);
        r.add(b(
            "apps",
            "v1",
            "replicasets",
            "ReplicaSet",
            true,
            &["rs"],
            true,
            true,
        ));
        let rbac = "rbac.authorization.k8s.io";
        r.add(b(rbac, "v1", "roles", "Role", true, &[], false, false));
        r.add(b(
            rbac,
            "v1",
            "rolebindings",
            "RoleBinding",
            true,
            &[],
            false,
            false,
        ));
        r.add(b(
            rbac,
            "v1",
            "clusterroles",
            "ClusterRole",
            false,
            &[],
            false,
            false,
        ));
        r.add(b(
            rbac,
            "v1",
            "clusterrolebindings",
            "ClusterRoleBinding",
            false,
            &[],
            false,
            false,
        ));
        r.add(b(
            "coordination.k8s.io",
            "v1",
            "leases",
            "Lease",
            true,
            &[],
            false,
            false,
        ));
        r.add(b(
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
            "CustomResourceDefinition",
            false,
            &["crd", "crds"],
            true,
            false,
        ));
        let mut ssar = b(
            "authorization.k8s.io",
            "v1",
            "selfsubjectaccessreviews",
            "SelfSubjectAccessReview",
            false,
            &[],
            false,
            false,
        );
        ssar.verbs = vec!["create"];
        r.add(ssar);
        let mut ssr = b(
            "authentication.k8s.io",
            "v1",
            "selfsubjectreviews",
            "SelfSubjectReview",
            false,
            &[],
            false,
            false,
        );
        ssr.verbs = vec!["create"];
        r.add(ssr);
        r
    }

    /// Adds or replaces a resource.
    pub fn add(&mut self, info: ResourceInfo) {
        self.resources
            .insert((info.group.clone(), info.plural.clone()), info);
    }

    /// Removes a resource (its CRD was deleted).
    pub fn remove(&mut self, group: &str, plural: &str) {
        self.resources
            .remove(&(group.to_string(), plural.to_string()));
    }

    /// The resource served at `group`/`version`/`plural`.
    pub fn get(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceInfo> {
        self.resources
            .get(&(group.to_string(), plural.to_string()))
            .filter(|r| r.version == version)
    }

    /// The resource of a kind, for owner references and apply bodies.
    pub fn by_kind(&self, api_version: &str, kind: &str) -> Option<&ResourceInfo> {
        self.resources
            .values()
            .find(|r| r.kind == kind && r.api_version() == api_version)
    }

    /// Every resource.
    pub fn all(&self) -> impl Iterator<Item = &ResourceInfo> {
        self.resources.values()
    }

    /// The groups and their version, core excluded, in a stable order.
    fn groups(&self) -> BTreeMap<String, String> {
        self.resources
            .values()
            .filter(|r| !r.group.is_empty())
            .map(|r| (r.group.clone(), r.version.clone()))
            .collect()
    }

    /// `GET /api`
    pub fn api_versions(&self) -> Value {
        json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}]})
    }

    /// `GET /apis`
    pub fn api_group_list(&self) -> Value {
        let groups: Vec<Value> = self
            .groups()
            .into_iter()
            .map(|(g, v)| {
                let gv = json!({"groupVersion": format!("{g}/{v}"), "version": v});
                json!({"name": g, "versions": [gv.clone()], "preferredVersion": gv})
            })
            .collect();
        json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
    }

    /// `GET /apis/{group}`
    pub fn api_group(&self, group: &str) -> Option<Value> {
        let version = self.groups().get(group)?.clone();
        let gv = json!({"groupVersion": format!("{group}/{version}"), "version": version});
        Some(
            json!({"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": [gv.clone()], "preferredVersion": gv}),
        )
    }

    /// `GET /api/v1` or `GET /apis/{group}/{version}`
    pub fn api_resource_list(&self, group: &str, version: &str) -> Option<Value> {
        let mut resources = Vec::new();
        for r in self
            .resources
            .values()
            .filter(|r| r.group == group && r.version == version)
        {
            resources.push(r.api_resource());
            for (sub, _, verbs, kind) in r.sub_resources() {
                let mut entry = json!({
                    "name": format!("{}/{}", r.plural, sub),
                    "singularName": "",
                    "namespaced": r.namespaced,
                    "verbs": verbs,
                });
                entry["kind"] = kind["kind"].clone();
                if let Some(g) = kind.get("group") {
                    entry["group"] = g.clone();
                    entry["version"] = kind["version"].clone();
                }
                resources.push(entry);
            }
        }
        if resources.is_empty() {
            return None;
        }
        let gv = if group.is_empty() {
            version.to_string()
        } else {
            format!("{group}/{version}")
        };
        Some(
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
        )
    }

    /// Aggregated discovery (`apidiscovery.k8s.io/v2` `APIGroupDiscoveryList`) for `/api`
    /// (core only) or `/apis` (every group).
    pub fn aggregated(&self, core: bool) -> Value {
        let mut by_group: BTreeMap<(String, String), Vec<&ResourceInfo>> = BTreeMap::new();
        for r in self
            .resources
            .values()
            .filter(|r| r.group.is_empty() == core)
        {
            by_group
                .entry((r.group.clone(), r.version.clone()))
                .or_default()
                .push(r);
        }
        let items: Vec<Value> = by_group
            .into_iter()
            .map(|((group, version), rs)| {
                let resources: Vec<Value> = rs
                    .iter()
                    .map(|r| {
                        let subs: Vec<Value> = r
                            .sub_resources()
                            .into_iter()
                            .map(|(sub, _, verbs, kind)| {
                                json!({
                                    "subresource": sub,
                                    "responseKind": {"group": kind.get("group").cloned().unwrap_or(json!(r.group)), "version": kind.get("version").cloned().unwrap_or(json!(r.version)), "kind": kind["kind"]},
                                    "verbs": verbs,
                                })
                            })
                            .collect();
                        json!({
                            "resource": r.plural,
                            "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
                            "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                            "singularResource": r.singular,
                            "verbs": r.verbs,
                            "shortNames": r.short_names,
                            "categories": r.categories,
                            "subresources": subs,
                        })
                    })
                    .collect();
                json!({
                    "metadata": {"name": group},
                    "versions": [{"version": version, "resources": resources, "freshness": "Current"}],
                })
            })
            .collect();
        json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
    }
}
