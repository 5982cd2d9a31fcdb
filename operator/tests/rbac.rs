//! The chart's RBAC grants exactly what the operator uses: every entry of the operator's
//! permission table (`jetflow_operator::permissions`) is in the chart's ClusterRole
//! (cluster-wide) or its leader-election Role (the Lease), and the chart grants nothing the
//! table lacks. The chart is read as Helm renders it (`jetflow_testsupport::chart`, the real
//! Helm SDK). The reconciler tests check the other link: every request they see the operator
//! send is in the table.

use std::collections::BTreeSet;

use jetflow_operator::permissions::{Scope, grants};
use serde::Deserialize;

const NAMESPACE: &str = "jetflow-system";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Doc {
    kind: String,
    metadata: Metadata,
    #[serde(default)]
    rules: Vec<Rule>,
    #[serde(default)]
    role_ref: Option<RoleRef>,
    #[serde(default)]
    subjects: Vec<Subject>,
    #[serde(default)]
    spec: serde_yaml_ng::Value,
}

#[derive(Deserialize)]
struct Metadata {
    name: String,
    #[serde(default)]
    namespace: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    #[serde(default)]
    api_groups: Vec<String>,
    #[serde(default)]
    resources: Vec<String>,
    #[serde(default)]
    verbs: Vec<String>,
    #[serde(default)]
    resource_names: Vec<String>,
}

#[derive(Deserialize)]
struct RoleRef {
    kind: String,
    name: String,
}

#[derive(Deserialize)]
struct Subject {
    kind: String,
    name: String,
    #[serde(default)]
    namespace: Option<String>,
}

/// The chart's manifests with default values, as Helm renders them; `None` (after saying why)
/// when the chart tools are not installed.
fn rendered() -> Option<Vec<Doc>> {
    if jetflow_testsupport::chart::python().is_none() {
        eprintln!("skipped: {}", jetflow_testsupport::chart::MISSING);
        return None;
    }
    let text = jetflow_testsupport::chart::render(NAMESPACE, &[]);
    Some(
        serde_yaml_ng::Deserializer::from_str(&text)
            .map(|d| Doc::deserialize(d).unwrap_or_else(|e| panic!("rendered manifest: {e}")))
            .collect(),
    )
}

fn rules_of(docs: &[Doc], kind: &str, scope: Scope) -> BTreeSet<(Scope, String, String, String)> {
    let mut set = BTreeSet::new();
    for doc in docs.iter().filter(|d| d.kind == kind) {
        for rule in &doc.rules {
            assert!(
                rule.resource_names.is_empty(),
                "the table has no resourceNames rules"
            );
            for g in &rule.api_groups {
                for r in &rule.resources {
                    for v in &rule.verbs {
                        assert_ne!(v, "*", "no wildcard verbs");
                        assert_ne!(r, "*", "no wildcard resources");
                        set.insert((scope, g.clone(), r.clone(), v.clone()));
                    }
                }
            }
        }
    }
    set
}

#[test]
fn chart_rbac_grants_exactly_the_operators_permission_table() {
    let Some(docs) = rendered() else { return };
    let mut chart = rules_of(&docs, "ClusterRole", Scope::Cluster);
    chart.extend(rules_of(&docs, "Role", Scope::OperatorNamespace));
    let table: BTreeSet<(Scope, String, String, String)> = grants()
        .into_iter()
        .map(|(s, g, r, v)| (s, g.to_owned(), r.to_owned(), v.to_owned()))
        .collect();
    let missing: Vec<_> = table.difference(&chart).collect();
    let extra: Vec<_> = chart.difference(&table).collect();
    assert!(
        missing.is_empty(),
        "the operator uses these but the chart does not grant them: {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "the chart grants these but the operator does not use them: {extra:?}"
    );
}

#[test]
fn each_role_is_bound_to_the_operators_service_account() {
    let Some(docs) = rendered() else { return };
    let account = docs
        .iter()
        .find(|d| d.kind == "ServiceAccount")
        .expect("the chart renders a ServiceAccount");
    assert_eq!(account.metadata.namespace.as_deref(), Some(NAMESPACE));
    let deployment = docs
        .iter()
        .find(|d| d.kind == "Deployment")
        .expect("the chart renders the operator's Deployment");
    assert_eq!(deployment.metadata.namespace.as_deref(), Some(NAMESPACE));
    assert_eq!(
        deployment.spec["template"]["spec"]["serviceAccountName"].as_str(),
        Some(account.metadata.name.as_str()),
        "the operator's pods run as the ServiceAccount the roles are bound to"
    );
    for (role_kind, binding_kind) in [
        ("ClusterRole", "ClusterRoleBinding"),
        ("Role", "RoleBinding"),
    ] {
        let role = docs
            .iter()
            .find(|d| d.kind == role_kind)
            .unwrap_or_else(|| panic!("the chart renders a {role_kind}"));
        let binding = docs
            .iter()
            .find(|d| d.kind == binding_kind)
            .unwrap_or_else(|| panic!("the chart renders a {binding_kind}"));
        let role_ref = binding.role_ref.as_ref().expect("roleRef");
        assert_eq!(
            (role_ref.kind.as_str(), role_ref.name.as_str()),
            (role_kind, role.metadata.name.as_str())
        );
        if role_kind == "Role" {
            assert_eq!(
                role.metadata.namespace.as_deref(),
                Some(NAMESPACE),
                "the Lease's Role"
            );
            assert_eq!(binding.metadata.namespace.as_deref(), Some(NAMESPACE));
        }
        let subjects: Vec<_> = binding
            .subjects
            .iter()
            .map(|s| (s.kind.as_str(), s.name.as_str(), s.namespace.as_deref()))
            .collect();
        assert_eq!(
            subjects,
            [(
                "ServiceAccount",
                account.metadata.name.as_str(),
                Some(NAMESPACE)
            )],
            "{binding_kind} {}",
            binding.metadata.name
        );
    }
}
