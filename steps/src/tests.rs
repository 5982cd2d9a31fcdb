//! Unit tests of compiled steps over single messages: each step kind, variables, multi-output
//! maps, determinism, failures and the passthrough guarantee.

use std::collections::BTreeMap;

use bytes::Bytes;
use jetflow_crds::pipeline::Step;

use crate::json::PARSES;
use crate::{
    FailureKind, Headers, Input, JqError, MAX_ERROR_LEN, MAX_OUTPUTS, Output, OutputHeaders,
    Position, StepError, Steps, SyntaxProblem, check,
};

fn filter(code: &str) -> Step {
    Step {
        filter: Some(code.into()),
        ..Step::default()
    }
}

fn map(code: &str) -> Step {
    Step {
        map: Some(code.into()),
        ..Step::default()
    }
}

fn set_subject(t: &str) -> Step {
    Step {
        set_subject: Some(t.into()),
        ..Step::default()
    }
}

fn set_headers(pairs: &[(&str, &str)]) -> Step {
    Step {
        set_headers: Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        ),
        ..Step::default()
    }
}

fn drop_headers(names: &[&str]) -> Step {
    Step {
        drop_headers: Some(names.iter().map(|n| n.to_string()).collect()),
        ..Step::default()
    }
}

fn run_with(
    steps: &[Step],
    subject: &str,
    headers: Option<&Headers>,
    payload: &str,
    seq: u64,
) -> Result<Vec<Output>, crate::StepFailure> {
    let steps = Steps::compile(steps).unwrap();
    let payload = Bytes::copy_from_slice(payload.as_bytes());
    steps.apply(Input {
        subject,
        headers,
        payload: &payload,
        seq,
    })
}

fn run(steps: &[Step], payload: &str) -> Result<Vec<Output>, crate::StepFailure> {
    run_with(steps, "orders.eu.42", None, payload, 7)
}

/// The headers of an output whose headers a step changed.
fn changed(output: &Output) -> Option<&Headers> {
    match &output.headers {
        OutputHeaders::Changed(headers) => headers.as_ref(),
        OutputHeaders::Unchanged => panic!("the headers are unchanged: {output:?}"),
    }
}

fn payloads(outputs: &[Output]) -> Vec<String> {
    outputs
        .iter()
        .map(|o| String::from_utf8(o.payload.to_vec()).unwrap())
        .collect()
}

fn parses() -> usize {
    PARSES.with(|p| p.get())
}

#[test]
fn no_steps_pass_the_message_untouched() {
    let steps = Steps::compile(&[]).unwrap();
    assert!(steps.is_passthrough());
    let mut headers = Headers::new();
    headers.insert("A", "1");
    let payload = Bytes::from_static(b"\xff not json");
    let out = steps
        .apply(Input {
            subject: "a.b",
            headers: Some(&headers),
            payload: &payload,
            seq: 1,
        })
        .unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].subject, "a.b");
    assert_eq!(out[0].headers, OutputHeaders::Unchanged);
    // The same buffer, not a copy.
    assert_eq!(out[0].payload.as_ptr(), payload.as_ptr());
}

#[test]
fn header_and_subject_steps_never_parse_the_payload() {
    let steps = [
        set_headers(&[("X-Region", "{{token(2)}}"), ("X-From", "{{subject}}")]),
        drop_headers(&["Trace"]),
        set_subject("routed.{{token(2)}}.{{token(3)}}"),
    ];
    let compiled = Steps::compile(&steps).unwrap();
    assert!(!compiled.is_passthrough());
    let mut headers = Headers::new();
    headers.insert("Trace", "t1");
    let payload = Bytes::from_static(b"{ this is not JSON \xff");
    let before = parses();
    let out = compiled
        .apply(Input {
            subject: "orders.eu.42",
            headers: Some(&headers),
            payload: &payload,
            seq: 3,
        })
        .unwrap();
    assert_eq!(parses(), before, "no step reads the payload");
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].payload.as_ptr(), payload.as_ptr());
    assert_eq!(out[0].payload, payload);
    assert_eq!(out[0].subject, "routed.eu.42");
    let h = changed(&out[0]).unwrap();
    assert_eq!(h.get("X-Region").unwrap(), "eu");
    assert_eq!(h.get("X-From").unwrap(), "orders.eu.42");
    assert!(h.get("Trace").is_none());
}

#[test]
fn payload_is_parsed_once_whatever_the_number_of_steps() {
    let steps = [
        filter(".qty > 0"),
        set_subject("x.{{payload.region}}"),
        set_headers(&[("Region", "{{payload.region}}")]),
        filter(r#".region == "eu""#),
        map("{region, n: (.qty * 2)}"),
        filter(".n > 1"),
        map(". , ."),
        set_subject("y.{{payload.region}}"),
    ];
    let before = parses();
    let out = run(&steps, r#"{"qty": 3, "region": "eu"}"#).unwrap();
    assert_eq!(parses() - before, 1);
    assert_eq!(payloads(&out), [r#"{"region":"eu","n":6}"#; 2]);
    assert_eq!(out[0].subject, "y.eu");
}

#[test]
fn filter_keeps_true_and_drops_false_null_and_no_output() {
    let payload = r#"{"ok": true, "no": false}"#;
    assert_eq!(run(&[filter(".ok")], payload).unwrap().len(), 1);
    assert_eq!(run(&[filter(".no")], payload).unwrap().len(), 0);
    assert_eq!(run(&[filter(".missing")], payload).unwrap().len(), 0);
    assert_eq!(run(&[filter("empty")], payload).unwrap().len(), 0);
    // Only the first output counts; the rest is not evaluated.
    assert_eq!(
        run(&[filter(r#"true, error("never")"#)], payload)
            .unwrap()
            .len(),
        1
    );
    assert_eq!(run(&[filter("false, true")], payload).unwrap().len(), 0);
}

#[test]
fn filter_keeps_the_payload_bytes_as_they_came() {
    let payload = "{ \"keep\" : true,   \"n\": 1.50 }";
    let out = run(&[filter(".keep")], payload).unwrap();
    assert_eq!(payloads(&out), [payload]);
}

#[test]
fn filter_with_a_non_boolean_result_fails() {
    let e = run(&[filter(".n")], r#"{"n": 3}"#).unwrap_err();
    assert_eq!(e.kind, FailureKind::Eval);
    assert!(e.message.contains("filter yielded 3"), "{e}");
}

#[test]
fn map_reshapes_the_payload() {
    let out = run(
        &[map(
            "{id: .order_id, total: (.qty * .price), customer: .customer.name}",
        )],
        r#"{"order_id": "o-1", "qty": 3, "price": 2.5, "customer": {"name": "Ada"}}"#,
    )
    .unwrap();
    assert_eq!(
        payloads(&out),
        [r#"{"id":"o-1","total":7.5,"customer":"Ada"}"#]
    );
    assert_eq!(out[0].subject, "orders.eu.42");
}

#[test]
fn map_with_several_outputs_emits_them_in_order() {
    let out = run(
        &[map(".items[] | {sku, order: $seq}")],
        r#"{"items": [{"sku": "a"}, {"sku": "b"}, {"sku": "c"}]}"#,
    )
    .unwrap();
    assert_eq!(
        payloads(&out),
        [
            r#"{"sku":"a","order":7}"#,
            r#"{"sku":"b","order":7}"#,
            r#"{"sku":"c","order":7}"#
        ]
    );
    // Two fan-outs: outputs are ordered by the first map's output, then the second's.
    let out = run(&[map(".[]"), map(". * 10, . * 100")], "[1, 2]").unwrap();
    assert_eq!(payloads(&out), ["10", "100", "20", "200"]);
}

#[test]
fn map_with_no_output_drops_the_message() {
    assert!(run(&[map("empty")], "{}").unwrap().is_empty());
    assert!(run(&[map(".[]")], "[]").unwrap().is_empty());
}

#[test]
fn map_that_fails_midway_emits_nothing() {
    let e = run(
        &[map(r#".[] | if . == 3 then error("three") else . end"#)],
        "[1, 2, 3, 4]",
    )
    .unwrap_err();
    assert_eq!(e.kind, FailureKind::Eval);
    assert_eq!(e.message, "three");
}

#[test]
fn map_with_too_many_outputs_fails() {
    let e = run(&[map("range(100000)")], "null").unwrap_err();
    assert_eq!(e.kind, FailureKind::Eval);
    assert!(e.message.contains(&MAX_OUTPUTS.to_string()), "{e}");
}

#[test]
fn map_output_that_is_not_json_fails() {
    let e = run(&[map(r#""ab" | tobytes"#)], "null").unwrap_err();
    assert_eq!((e.index, e.kind), (0, FailureKind::Eval));
    assert!(e.message.contains("byte string"), "{e}");
}

#[test]
fn variables_are_subject_headers_and_seq() {
    let mut headers = Headers::new();
    headers.insert("Z-Last", "z");
    headers.insert("A-First", "a");
    headers.append("A-First", "second value");
    let out = run_with(
        &[map("{s: $subject, h: $headers, q: $seq}")],
        "orders.eu.1",
        Some(&headers),
        "null",
        18446744073709551615,
    )
    .unwrap();
    assert_eq!(
        payloads(&out),
        [r#"{"s":"orders.eu.1","h":{"A-First":"a","Z-Last":"z"},"q":18446744073709551615}"#]
    );
    let out = run_with(&[map("$headers")], "a", None, "null", 0).unwrap();
    assert_eq!(payloads(&out), ["{}"]);
}

#[test]
fn variables_follow_earlier_steps() {
    let steps = [
        set_subject("new.{{token(2)}}"),
        set_headers(&[("Tag", "t-{{token(1)}}")]),
        map("[$subject, $headers.Tag]"),
    ];
    let out = run(&steps, "{}").unwrap();
    assert_eq!(payloads(&out), [r#"["new.eu","t-new"]"#]);
}

#[test]
fn same_input_gives_same_outputs() {
    let steps = [
        map(".items[] | {sku, tags: ($headers | keys_unsorted), seq: $seq}"),
        set_headers(&[("Sku", "{{payload.sku}}")]),
    ];
    let payload = r#"{"items": [{"sku": "a"}, {"sku": "b"}]}"#;
    // The same headers in two different orders.
    let mut h1 = Headers::new();
    let mut h2 = Headers::new();
    for i in 0..20 {
        h1.insert(format!("H{i}").as_str(), "v");
        h2.insert(format!("H{}", 19 - i).as_str(), "v");
    }
    let first = run_with(&steps, "s.1", Some(&h1), payload, 5).unwrap();
    for _ in 0..10 {
        assert_eq!(
            run_with(&steps, "s.1", Some(&h1), payload, 5).unwrap(),
            first
        );
        let other = run_with(&steps, "s.1", Some(&h2), payload, 5).unwrap();
        assert_eq!(
            payloads(&other),
            payloads(&first),
            "$headers is in name order"
        );
    }
    assert_eq!(first.len(), 2);
}

#[test]
fn set_subject_renders_tokens_and_payload_fields() {
    let out = run(
        &[set_subject(
            "by-region.{{payload.customer.region}}.{{token(3)}}",
        )],
        r#"{"customer": {"region": "us"}}"#,
    )
    .unwrap();
    assert_eq!(out[0].subject, "by-region.us.42");
    assert_eq!(
        payloads(&out),
        [r#"{"customer": {"region": "us"}}"#],
        "the payload is not rewritten"
    );
}

#[test]
fn set_subject_failures_are_eval_or_parse() {
    let e = run(&[set_subject("x.{{payload.region}}")], r#"{"id": 1}"#).unwrap_err();
    assert_eq!(e.kind, FailureKind::Eval);
    assert!(e.message.contains("region"), "{e}");
    let e = run(
        &[set_subject("x.{{payload.region}}")],
        r#"{"region": "a b"}"#,
    )
    .unwrap_err();
    assert_eq!(e.kind, FailureKind::Eval);
    let e = run(&[set_subject("x.{{payload.region}}")], "not json").unwrap_err();
    assert_eq!(e.kind, FailureKind::Parse);
    let e = run(&[set_subject("x.{{token(9)}}")], "not json").unwrap_err();
    assert_eq!(e.kind, FailureKind::Eval);
}

#[test]
fn set_headers_replaces_values_and_drop_headers_removes_exact_names() {
    let mut headers = Headers::new();
    headers.insert("Keep", "k");
    headers.append("Multi", "1");
    headers.append("Multi", "2");
    headers.insert("Replace", "old");
    headers.insert("drop-me", "x");
    let steps = [
        set_headers(&[("Replace", "new {{payload.v}}"), ("Added", "a")]),
        drop_headers(&["drop-me", "Absent", "keep"]),
    ];
    let out = run_with(&steps, "s", Some(&headers), r#"{"v": 1.5}"#, 1).unwrap();
    let h = changed(&out[0]).unwrap();
    assert_eq!(h.get("Replace").unwrap(), "new 1.5");
    assert_eq!(h.get("Added").unwrap(), "a");
    assert_eq!(h.get("Keep").unwrap(), "k", "names match exactly");
    let multi: Vec<&str> = h.get_all("Multi").collect();
    assert_eq!(multi, ["1", "2"]);
    assert!(h.get("drop-me").is_none());
    // Dropping the last header leaves no header map.
    let mut one = Headers::new();
    one.insert("Only", "1");
    let out = run_with(&[drop_headers(&["Only"])], "s", Some(&one), "x", 1).unwrap();
    assert_eq!(out[0].headers, OutputHeaders::Changed(None));
}

#[test]
fn set_headers_rejects_a_value_with_a_line_break() {
    let e = run(
        &[set_headers(&[("V", "{{payload.v}}")])],
        r#"{"v": "a\nb"}"#,
    )
    .unwrap_err();
    assert_eq!(e.kind, FailureKind::Eval);
}

#[test]
fn payload_that_is_not_json_is_a_parse_failure_naming_the_step() {
    let steps = [
        set_headers(&[("A", "b")]),
        Step {
            name: Some("reshape".into()),
            ..map(".a")
        },
    ];
    let e = run(&steps, "{\"a\": ").unwrap_err();
    assert_eq!(
        (e.index, e.name.as_str(), e.kind),
        (1, "reshape", FailureKind::Parse)
    );
    assert!(e.message.starts_with("payload is not JSON"), "{e}");
    assert!(
        e.to_string().starts_with("step 1 (reshape): parse: "),
        "{e}"
    );
}

#[test]
fn runtime_errors_are_eval_failures_with_jq_text() {
    let e = run(&[filter("true"), map(".a.b")], r#"{"a": "text"}"#).unwrap_err();
    assert_eq!(
        (e.index, e.name.as_str(), e.kind),
        (1, "map[1]", FailureKind::Eval)
    );
    assert!(e.message.contains("cannot index"), "{e}");
    let e = run(&[filter(r#"error("bad order")"#)], "{}").unwrap_err();
    assert_eq!((e.index, e.name.as_str()), (0, "filter[0]"));
    assert_eq!(e.message, "bad order");
    assert_eq!(e.kind.as_str(), "eval");
}

#[test]
fn long_error_texts_are_cut() {
    let big = format!(r#"{{"a": "{}"}}"#, "é".repeat(5000));
    let e = run(&[map(".a.b")], &big).unwrap_err();
    assert!(e.message.len() <= MAX_ERROR_LEN, "{}", e.message.len());
    assert!(e.message.ends_with('…'));
}

#[test]
fn compile_errors_name_the_step_and_quote_jq() {
    let steps = [filter(".ok"), map("{a: }")];
    let e = Steps::compile(&steps).unwrap_err();
    assert_eq!((e.index, e.name.as_str()), (1, "map[1]"));
    assert!(
        e.to_string()
            .starts_with("spec.steps[1] (map[1]): map: jq syntax error: "),
        "{e}"
    );
    assert_eq!(check(&steps), Err(e));

    let e = check(&[Step {
        name: Some("keep-big".into()),
        ..filter("bigness > 3")
    }])
    .unwrap_err();
    assert_eq!(e.index, 0);
    assert_eq!(
        e.to_string(),
        "spec.steps[0] (keep-big): filter: jq error: undefined filter bigness/0 at column 1"
    );

    let e = check(&[map("$payload")]).unwrap_err();
    assert!(
        e.reason.to_string().contains("undefined variable $payload"),
        "{e}"
    );
    assert!(
        e.reason.to_string().contains("$subject, $headers and $seq"),
        "{e}"
    );

    let StepError::Jq {
        field: "map",
        source: JqError::Undefined { names },
    } = &e.reason
    else {
        panic!("an undefined name: {e:?}");
    };
    assert_eq!(names[0].at, Position::Column(1));
    let e = check(&[filter(".a | {b: }")]).unwrap_err();
    let StepError::Jq {
        field: "filter",
        source: JqError::Syntax { problems },
    } = &e.reason
    else {
        panic!("a syntax error: {e:?}");
    };
    assert!(
        matches!(
            problems[0],
            SyntaxProblem::Expected {
                at: Position::Column(_),
                ..
            }
        ),
        "{e}"
    );

    let e = check(&[map("now")]).unwrap_err();
    assert!(e.reason.to_string().contains("deterministic"), "{e}");
}

#[test]
fn compile_checks_templates_and_header_names() {
    let e = check(&[set_subject("x.{{nope}}")]).unwrap_err();
    assert!(e.reason.to_string().contains("unknown placeholder"), "{e}");
    let e = check(&[set_headers(&[("A", "{{payload.}}")])]).unwrap_err();
    assert!(e.reason.to_string().starts_with("setHeaders.A: "), "{e}");
    let e = check(&[set_headers(&[("Bad Name", "v")])]).unwrap_err();
    assert!(e.reason.to_string().contains("not a header name"), "{e}");
    let e = check(&[set_headers(&[("A", "x\ny")])]).unwrap_err();
    assert_eq!(e.reason, StepError::SetHeaderLineBreak { name: "A".into() });
    let e = check(&[Step::default()]).unwrap_err();
    assert_eq!(e.reason, StepError::NotOneKind);
    assert!(e.reason.to_string().contains("exactly one"), "{e}");
    assert!(check(&[filter("true"), map("."), drop_headers(&["X"])]).is_ok());
}

#[test]
fn steps_can_be_shared_between_threads() {
    fn shared<T: Send + Sync>() {}
    shared::<Steps>();
    let steps = Steps::compile(&[map(".")]).unwrap();
    assert_eq!(steps.names().collect::<Vec<_>>(), ["map[0]"]);
}

mod depth;
