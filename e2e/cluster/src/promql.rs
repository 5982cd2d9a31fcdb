//! The metric names and label names a PromQL expression (or a Grafana `label_values(...)`
//! query) uses, so that a test can hold dashboards and alerts against what the binaries
//! export.
//!
//! A small lexer, not a full parser: it knows string literals, the label matchers in `{...}`,
//! durations in `[...]`, the label lists of `by`, `without`, `on`, `ignoring`, `group_left`
//! and `group_right`, function calls, keywords, numbers, and Grafana's `$variable` and
//! `${variable}`. Whatever identifier is left is a metric name.

use std::collections::BTreeSet;

/// What an expression refers to.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Refs {
    /// Metric names (series names, `_bucket` and the like included).
    pub metrics: BTreeSet<String>,
    /// Label names in matchers, grouping clauses and `label_values`.
    pub labels: BTreeSet<String>,
}

const KEYWORDS: [&str; 9] = [
    "and", "or", "unless", "bool", "offset", "inf", "nan", "start", "end",
];
const LABEL_LISTS: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

fn ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// The metrics and labels of `expr`.
pub fn refs(expr: &str) -> Refs {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = Refs::default();
    let mut i = 0;
    // Inside `{...}`: identifiers are label names. Inside `(...)` after a label-list keyword:
    // identifiers are label names too.
    let mut in_matchers = false;
    let mut label_list = false;
    let mut pending_label_list = false;
    // The label argument of `label_values(metric, label)` is its last identifier.
    let mut label_values_depth: Option<usize> = None;
    let mut depth = 0usize;
    let mut last_ident_in_label_values: Option<String> = None;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => {
                i += 1;
                while i < chars.len() && chars[i] != c {
                    if chars[i] == '\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
            }
            '[' => {
                while i < chars.len() && chars[i] != ']' {
                    i += 1;
                }
                i += 1;
            }
            '{' => {
                in_matchers = true;
                i += 1;
            }
            '}' => {
                in_matchers = false;
                i += 1;
            }
            '(' => {
                depth += 1;
                if pending_label_list {
                    label_list = true;
                    pending_label_list = false;
                }
                i += 1;
            }
            ')' => {
                if label_list {
                    label_list = false;
                } else if label_values_depth == Some(depth) {
                    if let Some(label) = last_ident_in_label_values.take() {
                        out.metrics.remove(&label);
                        out.labels.insert(label);
                    }
                    label_values_depth = None;
                }
                depth = depth.saturating_sub(1);
                i += 1;
            }
            '$' => {
                // A Grafana variable: $name, ${name} or ${name:format}.
                i += 1;
                if i < chars.len() && chars[i] == '{' {
                    while i < chars.len() && chars[i] != '}' {
                        i += 1;
                    }
                    i += 1;
                } else {
                    while i < chars.len() && ident_char(chars[i]) {
                        i += 1;
                    }
                }
            }
            c if c.is_ascii_digit()
                || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) =>
            {
                // A number, possibly with an exponent or a duration suffix (5m, 1e3).
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            }
            c if ident_start(c) => {
                let start = i;
                while i < chars.len() && ident_char(chars[i]) {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let mut j = i;
                while j < chars.len() && chars[j].is_whitespace() {
                    j += 1;
                }
                let next = chars.get(j).copied();
                // `sum by (x) (...)`: an aggregation whose grouping comes before its argument.
                let rest: String = chars[j..].iter().take(8).collect();
                let grouped_aggregation = ["by", "without"].iter().any(|kw| {
                    rest.starts_with(kw) && !rest[kw.len()..].starts_with(|c: char| ident_char(c))
                });
                if in_matchers || label_list {
                    out.labels.insert(word);
                } else if LABEL_LISTS.contains(&word.as_str()) {
                    pending_label_list = next == Some('(');
                } else if next == Some('(') || grouped_aggregation {
                    // A function or aggregation call.
                    if word == "label_values" {
                        label_values_depth = Some(depth + 1);
                    }
                } else if !KEYWORDS.contains(&word.to_ascii_lowercase().as_str()) {
                    if label_values_depth.is_some() {
                        last_ident_in_label_values = Some(word.clone());
                    }
                    out.metrics.insert(word);
                }
            }
            _ => i += 1,
        }
    }
    out
}

/// The series names and label names of a Prometheus text exposition (`# ` lines skipped).
pub fn exported(text: &str) -> Refs {
    let mut out = Refs::default();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let name_end = line
            .find(|c: char| c == '{' || c.is_whitespace())
            .unwrap_or(line.len());
        out.metrics.insert(line[..name_end].to_owned());
        if line[name_end..].starts_with('{') {
            let body = &line[name_end + 1..line.rfind('}').unwrap_or(line.len())];
            // Label values are quoted and may hold commas: take each name before `="`.
            let mut rest = body;
            while let Some(eq) = rest.find("=\"") {
                let name = rest[..eq].trim_start_matches([',', ' ']);
                out.labels.insert(name.to_owned());
                let mut k = eq + 2;
                let bytes = rest.as_bytes();
                while k < bytes.len() && bytes[k] != b'"' {
                    if bytes[k] == b'\\' {
                        k += 1;
                    }
                    k += 1;
                }
                rest = &rest[(k + 1).min(rest.len())..];
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn metrics_and_labels_of_an_expression() {
        let r = refs(
            r#"histogram_quantile(0.99, sum by (namespace, le) (rate(jetflow_worker_checkpoint_duration_seconds_bucket{pipeline=~"$pipeline", kind!="a,b"}[$__rate_interval])))"#,
        );
        assert_eq!(
            r.metrics,
            set(&["jetflow_worker_checkpoint_duration_seconds_bucket"])
        );
        assert_eq!(r.labels, set(&["namespace", "le", "pipeline", "kind"]));
    }

    #[test]
    fn binary_operators_keywords_and_numbers_are_not_metrics() {
        let r = refs(
            "sum by (split) (deriv(lag_a[15m])) > 0\nand on (split) group_left (pod) sum without (x) (lag_b) > 1e3 offset 5m",
        );
        assert_eq!(r.metrics, set(&["lag_a", "lag_b"]));
        assert_eq!(r.labels, set(&["split", "pod", "x"]));
    }

    #[test]
    fn label_values_names_a_metric_and_a_label() {
        let r = refs(
            r#"label_values(jetflow_worker_messages_total{namespace=~"$namespace"}, pipeline)"#,
        );
        assert_eq!(r.metrics, set(&["jetflow_worker_messages_total"]));
        assert_eq!(r.labels, set(&["namespace", "pipeline"]));
    }

    #[test]
    fn an_exposition_gives_its_series_and_labels() {
        let text = "# HELP a_total A.\n# TYPE a_total counter\na_total{split=\"x,y=\\\"z\",kind=\"k\"} 3\nb_seconds_bucket{le=\"0.1\"} 1\nc 2\n";
        let e = exported(text);
        assert_eq!(e.metrics, set(&["a_total", "b_seconds_bucket", "c"]));
        assert_eq!(e.labels, set(&["split", "kind", "le"]));
    }
}
