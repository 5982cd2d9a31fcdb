//! RBAC against the permissions jetflow really uses: the operator's ClusterRole from the Helm
//! chart, the worker Role and RoleBinding the operator builds (its golden file), and a few
//! users and groups around them; every decision and refusal worded as kube-apiserver words it.

use std::path::{Path, PathBuf};

use jetflow_devcluster::rbac::{Attributes, Decision, Policy, UserInfo, forbidden_status};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule};
use serde_json::{Value, json};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

const OPERATOR: &str = "system:serviceaccount:jetflow-system:jetflow";
const WORKER: &str = "system:serviceaccount:shop:orders-copy-worker";

/// The chart's ClusterRole, its templates replaced as a release named `jetflow` renders them.
fn chart_cluster_role() -> ClusterRole {
    let text =
        std::fs::read_to_string(root().join("charts/jetflow/templates/clusterrole.yaml")).unwrap();
    let first = text.split("\n---").next().unwrap();
    let plain: String = first
        .lines()
        .filter(|l| !l.contains("{{-"))
        .map(|l| match (l.find("{{"), l.find("}}")) {
            (Some(a), Some(b)) => format!("{}jetflow{}\n", &l[..a], &l[b + 2..]),
            _ => format!("{l}\n"),
        })
        .collect();
    serde_yaml_ng::from_str(&plain).unwrap()
}

/// The worker ServiceAccount, Role and RoleBinding of the operator's golden file.
fn worker_objects() -> Vec<Value> {
    let text = std::fs::read_to_string(root().join("operator/src/pipeline/build/golden/rbac.yaml"))
        .unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| <Value as serde::Deserialize>::deserialize(d).unwrap())
        .collect()
}

fn worker(kind: &str) -> Value {
    worker_objects()
        .into_iter()
        .find(|o| o["kind"] == kind)
        .unwrap()
}

fn from<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).unwrap()
}

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
    let s = |v: &[&str]| Some(v.iter().map(|x| (*x).to_owned()).collect());
    PolicyRule {
        api_groups: s(groups),
        resources: s(resources),
        verbs: verbs.iter().map(|v| (*v).to_owned()).collect(),
        ..Default::default()
    }
}

fn cluster_role(name: &str, rules: Vec<PolicyRule>) -> ClusterRole {
    from(json!({"metadata": {"name": name}, "rules": rules}))
}

fn policy_with(operator_role: ClusterRole) -> Policy {
    Policy {
        roles: vec![
            from(worker("Role")),
            from(
                json!({"metadata": {"name": "deployer", "namespace": "shop"},
                "rules": [rule(&["rbac.authorization.k8s.io"], &["roles"], &["create", "escalate"]),
                          rule(&["rbac.authorization.k8s.io"], &["clusterroles"], &["bind"])]}),
            ),
        ],
        cluster_roles: vec![
            operator_role,
            cluster_role(
                "view-pipelines",
                vec![rule(
                    &["jetflow.io"],
                    &["pipelines"],
                    &["get", "list", "watch"],
                )],
            ),
            cluster_role(
                "scaler",
                vec![
                    rule(&["apps"], &["*/scale"], &["update"]),
                    rule(&["apps"], &["deployments"], &["get"]),
                ],
            ),
            cluster_role("admin", vec![rule(&["*"], &["*"], &["*"])]),
        ],
        role_bindings: vec![
            from(worker("RoleBinding")),
            from(
                json!({"metadata": {"name": "alice-view", "namespace": "shop"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view-pipelines"},
                "subjects": [{"kind": "User", "name": "alice"}, {"kind": "ServiceAccount", "name": "reporter"}]}),
            ),
            from(
                json!({"metadata": {"name": "bob-ghost", "namespace": "shop"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "ghost"},
                "subjects": [{"kind": "User", "name": "bob"}]}),
            ),
            from(
                json!({"metadata": {"name": "carol-deployer", "namespace": "shop"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "deployer"},
                "subjects": [{"kind": "User", "name": "carol"}]}),
            ),
        ],
        cluster_role_bindings: vec![
            from::<ClusterRoleBinding>(json!({"metadata": {"name": "jetflow"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "jetflow"},
                "subjects": [{"kind": "ServiceAccount", "name": "jetflow", "namespace": "jetflow-system"}]})),
            from(json!({"metadata": {"name": "ops-scaler"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "scaler"},
                "subjects": [{"kind": "Group", "name": "ops"}]})),
        ],
    }
}

fn policy() -> Policy {
    policy_with(chart_cluster_role())
}

fn user(name: &str) -> UserInfo {
    let groups = match name.strip_prefix("system:serviceaccount:") {
        Some(rest) => {
            let ns = rest.split(':').next().unwrap();
            vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{ns}"),
                "system:authenticated".into(),
            ]
        }
        None => vec!["system:authenticated".into()],
    };
    UserInfo {
        name: name.into(),
        groups,
    }
}

fn attrs(verb: &str, group: &str, resource: &str, namespace: &str, name: &str) -> Attributes {
    let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
    Attributes {
        verb: verb.into(),
        api_group: group.into(),
        resource: resource.into(),
        subresource: subresource.into(),
        namespace: namespace.into(),
        name: name.into(),
    }
}

#[test]
fn requests_are_decided_as_the_rbac_authorizer_decides_them() {
    let allow = None;
    let deny = Some;
    let cases: Vec<(UserInfo, Attributes, Option<&str>)> = vec![
        (
            user(OPERATOR),
            attrs("list", "jetflow.io", "pipelines", "", ""),
            allow,
        ),
        (
            user(OPERATOR),
            attrs("watch", "jetflow.io", "streams", "shop", ""),
            allow,
        ),
        (
            user(OPERATOR),
            attrs("patch", "jetflow.io", "pipelines/status", "shop", "orders"),
            allow,
        ),
        (
            user(OPERATOR),
            attrs("update", "jetflow.io", "pipelines/status", "shop", "orders"),
            deny(
                "pipelines.jetflow.io \"orders\" is forbidden: User \"system:serviceaccount:jetflow-system:jetflow\" cannot update resource \"pipelines/status\" in API group \"jetflow.io\" in the namespace \"shop\"",
            ),
        ),
        (
            user(OPERATOR),
            attrs("create", "", "configmaps", "shop", ""),
            allow,
        ),
        (
            user(OPERATOR),
            attrs(
                "delete",
                "apps",
                "deployments",
                "shop",
                "orders-copy-worker",
            ),
            deny(
                "deployments.apps \"orders-copy-worker\" is forbidden: User \"system:serviceaccount:jetflow-system:jetflow\" cannot delete resource \"deployments\" in API group \"apps\" in the namespace \"shop\"",
            ),
        ),
        (
            user(WORKER),
            attrs("get", "", "configmaps", "shop", "orders-copy-config"),
            allow,
        ),
        (
            user(WORKER),
            attrs("watch", "", "configmaps", "shop", "orders-copy-assignment"),
            allow,
        ),
        (
            user(WORKER),
            attrs("update", "", "configmaps", "shop", "orders-copy-checkpoint"),
            allow,
        ),
        (
            user(WORKER),
            attrs("update", "", "configmaps", "shop", "x"),
            deny(
                "configmaps \"x\" is forbidden: User \"system:serviceaccount:shop:orders-copy-worker\" cannot update resource \"configmaps\" in API group \"\" in the namespace \"shop\"",
            ),
        ),
        (
            user(WORKER),
            attrs("list", "", "configmaps", "shop", ""),
            deny(
                "configmaps is forbidden: User \"system:serviceaccount:shop:orders-copy-worker\" cannot list resource \"configmaps\" in API group \"\" in the namespace \"shop\"",
            ),
        ),
        (
            user(WORKER),
            attrs("create", "", "configmaps", "shop", ""),
            deny(
                "configmaps is forbidden: User \"system:serviceaccount:shop:orders-copy-worker\" cannot create resource \"configmaps\" in API group \"\" in the namespace \"shop\"",
            ),
        ),
        (
            user(WORKER),
            attrs("get", "", "configmaps", "default", "orders-copy-config"),
            deny(
                "configmaps \"orders-copy-config\" is forbidden: User \"system:serviceaccount:shop:orders-copy-worker\" cannot get resource \"configmaps\" in API group \"\" in the namespace \"default\"",
            ),
        ),
        (
            user("alice"),
            attrs("get", "jetflow.io", "pipelines", "shop", "orders"),
            allow,
        ),
        (
            user("alice"),
            attrs("get", "jetflow.io", "pipelines", "default", "orders"),
            deny(
                "pipelines.jetflow.io \"orders\" is forbidden: User \"alice\" cannot get resource \"pipelines\" in API group \"jetflow.io\" in the namespace \"default\"",
            ),
        ),
        (
            user("alice"),
            attrs("list", "jetflow.io", "pipelines", "", ""),
            deny(
                "pipelines.jetflow.io is forbidden: User \"alice\" cannot list resource \"pipelines\" in API group \"jetflow.io\" at the cluster scope",
            ),
        ),
        (
            user("alice"),
            attrs("get", "jetflow.io", "pipelines/status", "shop", "orders"),
            deny(
                "pipelines.jetflow.io \"orders\" is forbidden: User \"alice\" cannot get resource \"pipelines/status\" in API group \"jetflow.io\" in the namespace \"shop\"",
            ),
        ),
        // A ServiceAccount subject without a namespace is the binding's namespace's.
        (
            user("system:serviceaccount:shop:reporter"),
            attrs("list", "jetflow.io", "pipelines", "shop", ""),
            allow,
        ),
        (
            user("system:serviceaccount:other:reporter"),
            attrs("list", "jetflow.io", "pipelines", "shop", ""),
            deny(
                "pipelines.jetflow.io is forbidden: User \"system:serviceaccount:other:reporter\" cannot list resource \"pipelines\" in API group \"jetflow.io\" in the namespace \"shop\"",
            ),
        ),
        (
            UserInfo {
                name: "dave".into(),
                groups: vec!["ops".into()],
            },
            attrs("update", "apps", "deployments/scale", "shop", "w"),
            allow,
        ),
        (
            UserInfo {
                name: "dave".into(),
                groups: vec!["ops".into()],
            },
            attrs("update", "apps", "deployments", "shop", "w"),
            deny(
                "deployments.apps \"w\" is forbidden: User \"dave\" cannot update resource \"deployments\" in API group \"apps\" in the namespace \"shop\"",
            ),
        ),
        (
            user("bob"),
            attrs("get", "", "configmaps", "shop", "x"),
            deny(
                "configmaps \"x\" is forbidden: User \"bob\" cannot get resource \"configmaps\" in API group \"\" in the namespace \"shop\": RBAC: role.rbac.authorization.k8s.io \"ghost\" not found",
            ),
        ),
        (
            user("nobody"),
            attrs("create", "", "namespaces", "", ""),
            deny(
                "namespaces is forbidden: User \"nobody\" cannot create resource \"namespaces\" in API group \"\" at the cluster scope",
            ),
        ),
        (
            UserInfo {
                name: "jetflow-admin".into(),
                groups: vec!["system:masters".into()],
            },
            attrs("delete", "", "nodes", "", "local"),
            allow,
        ),
    ];
    let policy = policy();
    for (user, a, expected) in cases {
        let want = match expected {
            None => Decision::Allow,
            Some(m) => Decision::Deny(m.to_owned()),
        };
        assert_eq!(policy.authorize(&user, &a), want, "{} {a:?}", user.name);
    }
}

#[test]
fn the_forbidden_status_names_the_resource_and_object() {
    let a = attrs("update", "", "configmaps", "shop", "x");
    let Decision::Deny(message) = policy().authorize(&user(WORKER), &a) else {
        panic!("allowed")
    };
    assert_eq!(
        forbidden_status(&a, &message),
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": "Forbidden",
            "details": {"name": "x", "kind": "configmaps"}, "code": 403,
        })
    );
}

#[test]
fn the_operator_may_create_the_worker_role_and_binding_it_builds() {
    let policy = policy();
    for kind in ["Role", "RoleBinding"] {
        assert_eq!(
            policy.may_grant(&user(OPERATOR), &worker(kind)),
            Decision::Allow,
            "{kind}"
        );
    }
}

#[test]
fn the_operator_may_not_grant_a_verb_its_cluster_role_lacks() {
    let mut operator = chart_cluster_role();
    for rule in operator.rules.iter_mut().flatten() {
        if rule.resources.as_deref() == Some(&["configmaps".to_owned()][..]) {
            rule.verbs.retain(|v| v != "watch");
        }
    }
    let policy = policy_with(operator);
    let held = "user \"system:serviceaccount:jetflow-system:jetflow\" (groups=[\"system:serviceaccounts\" \"system:serviceaccounts:jetflow-system\" \"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:\n\
        {APIGroups:[\"\"], Resources:[\"configmaps\"], ResourceNames:[\"orders-copy-assignment\"], Verbs:[\"watch\"]}\n\
        {APIGroups:[\"\"], Resources:[\"configmaps\"], ResourceNames:[\"orders-copy-checkpoint\"], Verbs:[\"watch\"]}\n\
        {APIGroups:[\"\"], Resources:[\"configmaps\"], ResourceNames:[\"orders-copy-config\"], Verbs:[\"watch\"]}";
    assert_eq!(
        policy.may_grant(&user(OPERATOR), &worker("Role")),
        Decision::Deny(format!(
            "roles.rbac.authorization.k8s.io \"orders-copy-worker\" is forbidden: {held}"
        ))
    );
    assert_eq!(
        policy.may_grant(&user(OPERATOR), &worker("RoleBinding")),
        Decision::Deny(format!(
            "rolebindings.rbac.authorization.k8s.io \"orders-copy-worker\" is forbidden: {held}"
        ))
    );
}

#[test]
fn escalate_and_bind_let_a_user_grant_what_it_does_not_hold() {
    let policy = policy();
    let carol = user("carol");
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "big", "namespace": "shop"}, "rules": [rule(&[""], &["secrets"], &["get", "list"])]});
    assert_eq!(
        policy.may_grant(&carol, &role),
        Decision::Allow,
        "escalate on roles"
    );
    let binding = |ns: &str, kind: &str, name: &str| {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "b", "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": name},
        "subjects": [{"kind": "User", "name": "eve"}]})
    };
    assert_eq!(
        policy.may_grant(&carol, &binding("shop", "ClusterRole", "admin")),
        Decision::Allow,
        "bind on clusterroles"
    );
    let Decision::Deny(message) =
        policy.may_grant(&carol, &binding("default", "ClusterRole", "admin"))
    else {
        panic!("allowed")
    };
    assert!(message.starts_with("rolebindings.rbac.authorization.k8s.io \"b\" is forbidden: user \"carol\" (groups=[\"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:\n{APIGroups:[\"*\"], Resources:[\"*\"], Verbs:[\"*\"]}"), "{message}");
    assert_eq!(
        policy.may_grant(&user("alice"), &binding("shop", "Role", "nope")),
        Decision::Deny("roles.rbac.authorization.k8s.io \"nope\" not found".into())
    );
    let cluster_role = json!({"kind": "ClusterRole", "metadata": {"name": "x"}, "rules": [rule(&[""], &["pods"], &["get"])]});
    let Decision::Deny(message) = policy.may_grant(&user("alice"), &cluster_role) else {
        panic!("allowed")
    };
    assert_eq!(
        message,
        "clusterroles.rbac.authorization.k8s.io \"x\" is forbidden: user \"alice\" (groups=[\"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:\n{APIGroups:[\"\"], Resources:[\"pods\"], Verbs:[\"get\"]}"
    );
    let admin = UserInfo {
        name: "jetflow-admin".into(),
        groups: vec!["system:masters".into()],
    };
    assert_eq!(policy.may_grant(&admin, &cluster_role), Decision::Allow);
}

#[test]
fn held_permissions_cover_subresources_names_and_wildcards() {
    let policy = Policy {
        cluster_roles: vec![cluster_role(
            "r",
            vec![
                rule(&["apps"], &["*/scale", "deployments"], &["get", "update"]),
                rule(&[""], &["configmaps"], &["*"]),
            ],
        )],
        cluster_role_bindings: vec![from(json!({"metadata": {"name": "r"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "r"},
            "subjects": [{"kind": "User", "name": "u"}]}))],
        ..Default::default()
    };
    let role = |rules: Vec<PolicyRule>| json!({"kind": "Role", "metadata": {"name": "x", "namespace": "n"}, "rules": rules});
    let u = user("u");
    assert_eq!(
        policy.may_grant(
            &u,
            &role(vec![rule(
                &["apps"],
                &["deployments/scale", "statefulsets/scale"],
                &["update"]
            )])
        ),
        Decision::Allow
    );
    let mut named = rule(&[""], &["configmaps"], &["delete", "patch"]);
    named.resource_names = Some(vec!["a".into()]);
    assert_eq!(policy.may_grant(&u, &role(vec![named])), Decision::Allow);
    let Decision::Deny(message) = policy.may_grant(
        &u,
        &role(vec![rule(
            &["apps"],
            &["deployments", "replicasets"],
            &["get", "list"],
        )]),
    ) else {
        panic!("allowed")
    };
    assert!(message.ends_with("not currently held:\n{APIGroups:[\"apps\"], Resources:[\"deployments\"], Verbs:[\"list\"]}\n{APIGroups:[\"apps\"], Resources:[\"replicasets\"], Verbs:[\"get\" \"list\"]}"), "{message}");
}

#[test]
fn the_bootstrap_policy_lets_every_user_review_its_own_access() {
    let mut policy = Policy::default();
    for object in jetflow_devcluster::rbac::bootstrap_objects() {
        match object["kind"].as_str() {
            Some("ClusterRole") => policy.cluster_roles.push(from(object)),
            Some("ClusterRoleBinding") => policy.cluster_role_bindings.push(from(object)),
            other => panic!("{other:?}"),
        }
    }
    let review = attrs(
        "create",
        "authorization.k8s.io",
        "selfsubjectaccessreviews",
        "",
        "",
    );
    assert_eq!(policy.authorize(&user(WORKER), &review), Decision::Allow);
    let Decision::Deny(_) = policy.authorize(&user(WORKER), &attrs("list", "", "pods", "shop", ""))
    else {
        panic!("allowed")
    };
    // cluster-admin through the binding alone, without the built-in shortcut for the group
    let admin = UserInfo {
        name: "x".into(),
        groups: vec!["system:masters".into()],
    };
    assert_eq!(policy.may_grant(&admin, &json!({"kind": "ClusterRole", "metadata": {"name": "y"}, "rules": [rule(&["*"], &["*"], &["*"])]})), Decision::Allow);
}
