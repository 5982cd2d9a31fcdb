//! Matching of RBAC rules as Kubernetes does it: a rule allows a request
//! (`rbac.RuleAllows`: verbs, API groups, resources with `resource/subresource` and
//! `*/subresource`, resource names, `*` everywhere but names), and a set of rules covers
//! another (`validation.Covers`: every verb × group × resource × name of the other is allowed
//! by one rule of the set), naming what is missing in the server's compact form.

use k8s_openapi::api::rbac::v1::PolicyRule;

use super::Attributes;
use crate::admission::go_quote;

fn list(v: &Option<Vec<String>>) -> &[String] {
    v.as_deref().unwrap_or_default()
}

fn has(set: &[String], item: &str) -> bool {
    set.iter().any(|s| s == item)
}

/// Whether `rule` allows the request.
pub(super) fn allows(rule: &PolicyRule, a: &Attributes) -> bool {
    let combined = if a.subresource.is_empty() {
        a.resource.clone()
    } else {
        format!("{}/{}", a.resource, a.subresource)
    };
    let verb = rule.verbs.iter().any(|v| v == "*" || *v == a.verb);
    let group = list(&rule.api_groups)
        .iter()
        .any(|g| g == "*" || *g == a.api_group);
    let resource = list(&rule.resources).iter().any(|r| {
        r == "*"
            || *r == combined
            || (!a.subresource.is_empty()
                && r.len() == a.subresource.len() + 2
                && r.starts_with("*/")
                && r.ends_with(&a.subresource))
    });
    let names = list(&rule.resource_names);
    let name = names.is_empty() || has(names, &a.name);
    verb && group && resource && name
}

/// Each rule broken into rules of one verb, group, resource and name (`BreakdownRule`).
fn breakdown(rule: &PolicyRule) -> Vec<PolicyRule> {
    let mut out = Vec::new();
    let one = |s: &str| Some(vec![s.to_owned()]);
    for group in list(&rule.api_groups) {
        for resource in list(&rule.resources) {
            for verb in &rule.verbs {
                let base = PolicyRule {
                    api_groups: one(group),
                    resources: one(resource),
                    verbs: vec![verb.clone()],
                    ..Default::default()
                };
                if list(&rule.resource_names).is_empty() {
                    out.push(base);
                } else {
                    for name in list(&rule.resource_names) {
                        out.push(PolicyRule {
                            resource_names: one(name),
                            ..base.clone()
                        });
                    }
                }
            }
        }
    }
    for url in list(&rule.non_resource_urls) {
        for verb in &rule.verbs {
            out.push(PolicyRule {
                non_resource_urls: one(url),
                verbs: vec![verb.clone()],
                ..Default::default()
            });
        }
    }
    out
}

fn has_all(set: &[String], items: &[String]) -> bool {
    items.iter().all(|i| has(set, i))
}

fn resources_cover(set: &[String], covers: &[String]) -> bool {
    if has(set, "*") || has_all(set, covers) {
        return true;
    }
    covers.iter().all(|path| {
        has(set, path)
            || path
                .split_once('/')
                .is_some_and(|(_, sub)| has(set, &format!("*/{sub}")))
    })
}

fn urls_cover(set: &[String], covers: &[String]) -> bool {
    covers.iter().all(|path| {
        set.iter().any(|owner| {
            owner == path || (owner.ends_with('*') && path.starts_with(owner.trim_end_matches('*')))
        })
    })
}

/// `ruleCovers`: whether `owner` covers the broken-down `sub`.
fn rule_covers(owner: &PolicyRule, sub: &PolicyRule) -> bool {
    let verbs = has(&owner.verbs, "*") || has_all(&owner.verbs, &sub.verbs);
    let groups = has(list(&owner.api_groups), "*")
        || has_all(list(&owner.api_groups), list(&sub.api_groups));
    let resources = resources_cover(list(&owner.resources), list(&sub.resources));
    let urls = urls_cover(list(&owner.non_resource_urls), list(&sub.non_resource_urls));
    let owner_names = list(&owner.resource_names);
    let names = if list(&sub.resource_names).is_empty() {
        owner_names.is_empty()
    } else {
        owner_names.is_empty() || has_all(owner_names, list(&sub.resource_names))
    };
    verbs && groups && resources && names && urls
}

/// The parts of `servant` that `owner` does not cover (empty when covered).
pub(super) fn uncovered(owner: &[PolicyRule], servant: &[PolicyRule]) -> Vec<PolicyRule> {
    servant
        .iter()
        .flat_map(breakdown)
        .filter(|sub| !owner.iter().any(|o| rule_covers(o, sub)))
        .collect()
}

/// A group, a resource and at most one name: the key of the rules `compact` merges.
type SimpleResource = (String, String, Option<String>);

/// `CompactRules`: broken-down rules of one group, one resource and at most one name merged
/// into one rule with all their verbs.
pub(super) fn compact(rules: Vec<PolicyRule>) -> Vec<PolicyRule> {
    let mut out: Vec<PolicyRule> = Vec::new();
    let mut simple: Vec<(SimpleResource, PolicyRule)> = Vec::new();
    for rule in rules {
        let groups = list(&rule.api_groups);
        let resources = list(&rule.resources);
        let names = list(&rule.resource_names);
        let is_simple = names.len() <= 1
            && list(&rule.non_resource_urls).is_empty()
            && groups.len() == 1
            && resources.len() == 1;
        if !is_simple {
            out.push(rule);
            continue;
        }
        let key = (
            groups[0].clone(),
            resources[0].clone(),
            names.first().cloned(),
        );
        match simple.iter_mut().find(|(k, _)| *k == key) {
            Some((_, existing)) => existing.verbs.extend(rule.verbs),
            None => simple.push((key, rule)),
        }
    }
    out.extend(simple.into_iter().map(|(_, r)| r));
    out
}

fn go_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| go_quote(s)).collect();
    format!("[{}]", quoted.join(" "))
}

/// `rbacv1helpers.CompactString`: `{APIGroups:[""], Resources:["configmaps"], Verbs:["list"]}`.
pub(super) fn compact_string(rule: &PolicyRule) -> String {
    let mut parts = Vec::new();
    for (label, items) in [
        ("APIGroups", list(&rule.api_groups)),
        ("Resources", list(&rule.resources)),
        ("NonResourceURLs", list(&rule.non_resource_urls)),
        ("ResourceNames", list(&rule.resource_names)),
        ("Verbs", rule.verbs.as_slice()),
    ] {
        if !items.is_empty() {
            parts.push(format!("{label}:{}", go_list(items)));
        }
    }
    format!("{{{}}}", parts.join(", "))
}

/// Go's `%q` of a `[]string`: `["a" "b"]`.
pub(super) fn go_string_list(items: &[String]) -> String {
    go_list(items)
}
