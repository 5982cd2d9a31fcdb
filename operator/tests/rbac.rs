//! The chart's RBAC grants exactly what the operator uses: every entry of the operator's
//! permission table (`jetflow_operator::permissions`) is in `clusterrole.yaml` (cluster-wide)
//! or `leader-election-rbac.yaml` (the Lease), and the chart grants nothing the table lacks.
//! The reconciler tests check the other link: every request they see the operator send is in
//! the table.

use std::collections::BTreeSet;
use std::path::PathBuf;

use jetflow_operator::permissions::{Scope, grants};
use serde::Deserialize;

#[derive(Deserialize)]
struct Doc {
    kind: String,
    #[serde(default)]
    rules: Vec<Rule>,
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

fn template(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../charts/jetflow/templates")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The manifests of a template with Helm's actions taken out: lines that are only an action
/// (`{{- if … }}`, `{{- include … | nindent 4 }}`) are dropped, and inline actions become a
/// placeholder. Rules are literal YAML in both templates, so they survive intact.
fn docs(text: &str) -> Vec<Doc> {
    let mut out = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("{{") && trimmed.ends_with("}}") {
            continue;
        }
        let mut line = line.to_owned();
        while let (Some(start), Some(end)) = (line.find("{{"), line.find("}}")) {
            if end < start {
                break;
            }
            line.replace_range(start..end + 2, "helm-value");
        }
        out.push_str(&line);
        out.push('\n');
    }
    out.split("\n---")
        .filter(|d| d.lines().any(|l| l.starts_with("kind:")))
        .map(|d| serde_yaml_ng::from_str(d).unwrap_or_else(|e| panic!("{e}\n{d}")))
        .collect()
}

fn rules_of(text: &str, kind: &str, scope: Scope) -> BTreeSet<(Scope, String, String, String)> {
    let mut set = BTreeSet::new();
    for doc in docs(text).into_iter().filter(|d| d.kind == kind) {
        for rule in doc.rules {
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
    let mut chart = rules_of(&template("clusterrole.yaml"), "ClusterRole", Scope::Cluster);
    chart.extend(rules_of(
        &template("leader-election-rbac.yaml"),
        "Role",
        Scope::OperatorNamespace,
    ));
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
fn cluster_role_is_bound_to_the_operator_service_account() {
    let text = template("clusterrole.yaml");
    assert!(text.contains("kind: ClusterRoleBinding"));
    assert!(text.contains(r#"name: {{ include "jetflow.serviceAccountName" . }}"#));
    assert!(text.contains(r#"name: {{ include "jetflow.fullname" . }}"#));
    assert!(text.contains("namespace: {{ .Release.Namespace }}"));
}
