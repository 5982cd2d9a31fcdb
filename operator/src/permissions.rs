//! Every Kubernetes API call the operator makes, as RBAC rules: the one table that the Helm
//! chart's RBAC must match. Tests compare it both ways with `charts/jetflow/templates/
//! clusterrole.yaml` (cluster-wide rules) and `leader-election-rbac.yaml` (the Lease in the
//! operator's namespace), and check every request the reconcilers send in the integration tests
//! against it. Change the code that calls the API, change this table, and the chart follows.

/// Where a rule applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// Every namespace (the chart's ClusterRole).
    Cluster,
    /// Only the operator's own namespace (the chart's leader-election Role).
    OperatorNamespace,
}

/// One resource and the verbs the operator uses on it.
#[derive(Clone, Copy, Debug)]
pub struct Permission {
    /// API group; "" is the core group.
    pub group: &'static str,
    /// Resource, with `/subresource` where one is used.
    pub resource: &'static str,
    /// Verbs, in the order the chart lists them.
    pub verbs: &'static [&'static str],
    /// Where.
    pub scope: Scope,
    /// Which code path needs it.
    pub why: &'static str,
}

/// The operator's permissions.
pub const PERMISSIONS: &[Permission] = &[
    Permission {
        group: "jetflow.io",
        resource: "pipelines",
        verbs: &["get", "list", "watch", "patch"],
        scope: Scope::Cluster,
        why: "the Pipeline controller watches Pipelines; the finalizer is added and removed by patch",
    },
    Permission {
        group: "jetflow.io",
        resource: "pipelines/status",
        verbs: &["patch"],
        scope: Scope::Cluster,
        why: "status is written by server-side apply",
    },
    Permission {
        group: "jetflow.io",
        resource: "streams",
        verbs: &["get", "list", "watch", "patch"],
        scope: Scope::Cluster,
        why: "the Stream controller watches Streams; the finalizer is added and removed by patch",
    },
    Permission {
        group: "jetflow.io",
        resource: "streams/status",
        verbs: &["patch"],
        scope: Scope::Cluster,
        why: "status is written by server-side apply",
    },
    Permission {
        group: "apps",
        resource: "deployments",
        verbs: &["get", "list", "watch", "patch"],
        scope: Scope::Cluster,
        why: "worker Deployments: read before apply (no write when unchanged), applied by server-side apply, watched as owned objects",
    },
    Permission {
        group: "",
        resource: "configmaps",
        verbs: &["get", "list", "watch", "create", "update", "patch"],
        scope: Scope::Cluster,
        why: "config and assignment ConfigMaps are applied (patch); the checkpoint ConfigMap is created once and replaced on reset (create, update); list and watch are granted to workers by their Role, and RBAC lets the operator grant only what it holds",
    },
    Permission {
        group: "",
        resource: "serviceaccounts",
        verbs: &["get", "patch"],
        scope: Scope::Cluster,
        why: "the worker ServiceAccount, applied by server-side apply",
    },
    Permission {
        group: "rbac.authorization.k8s.io",
        resource: "roles",
        verbs: &["get", "patch"],
        scope: Scope::Cluster,
        why: "the worker Role, applied by server-side apply",
    },
    Permission {
        group: "rbac.authorization.k8s.io",
        resource: "rolebindings",
        verbs: &["get", "patch"],
        scope: Scope::Cluster,
        why: "the worker RoleBinding, applied by server-side apply",
    },
    Permission {
        group: "",
        resource: "pods",
        verbs: &["list", "watch"],
        scope: Scope::Cluster,
        why: "ready worker pods receive splits; pods coming and going trigger a reconcile",
    },
    Permission {
        group: "",
        resource: "secrets",
        verbs: &["get"],
        scope: Scope::Cluster,
        why: "the credentials and TLS material a connection names, to reach NATS as the workers do",
    },
    Permission {
        group: "events.k8s.io",
        resource: "events",
        verbs: &["create", "patch"],
        scope: Scope::Cluster,
        why: "Events on Pipelines and Streams (a repeated event is patched into a series)",
    },
    Permission {
        group: "coordination.k8s.io",
        resource: "leases",
        verbs: &["get", "create", "update"],
        scope: Scope::OperatorNamespace,
        why: "leader election: the Lease is created once, then renewed and taken over with resourceVersion preconditions",
    },
];

/// Whether the table grants `verb` on `group`/`resource` in `scope` (a cluster-wide grant
/// covers the operator's namespace too).
pub fn allows(group: &str, resource: &str, verb: &str, scope: Scope) -> bool {
    PERMISSIONS.iter().any(|p| {
        p.group == group
            && p.resource == resource
            && p.verbs.contains(&verb)
            && (p.scope == scope || p.scope == Scope::Cluster)
    })
}

/// The table flattened to `(scope, group, resource, verb)` tuples, sorted.
pub fn grants() -> Vec<(Scope, &'static str, &'static str, &'static str)> {
    let mut all: Vec<_> = PERMISSIONS
        .iter()
        .flat_map(|p| {
            p.verbs
                .iter()
                .map(move |v| (p.scope, p.group, p.resource, *v))
        })
        .collect();
    all.sort();
    all
}
