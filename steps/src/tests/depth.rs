//! Values nested past [`MAX_DEPTH`]: in payloads, in what an expression builds, in what it
//! raises. Each fails its message; none reaches code that recurses over it. These run on the
//! test harness's threads (2 MiB of stack, a quarter of the evaluator's), where any recursion
//! over 100,000 levels would abort the whole test binary.

use super::{filter, map, run, set_headers, set_subject};
use crate::{FailureKind, MAX_DEPTH, StepFailure};

const LIMIT: &str = "deeper than 512 levels, the steps' limit";

fn fails(result: Result<Vec<crate::Output>, StepFailure>, kind: FailureKind, text: &str) {
    let failure = result.expect_err("the message fails");
    assert_eq!(failure.kind, kind, "{failure}");
    assert!(failure.message.contains(text), "{failure}");
}

#[test]
fn the_limit_is_documented_as_512() {
    assert_eq!(MAX_DEPTH, 512);
}

#[test]
fn payloads_nested_past_the_limit_fail_to_parse_naming_the_limit() {
    let deep = "[".repeat(200_000);
    let jaq_only = format!("[NaN, {deep}");
    for payload in [&deep, &jaq_only] {
        for step in [
            map("."),
            filter("true"),
            set_subject("x.{{payload.a}}"),
            set_headers(&[("H", "{{payload.a}}")]),
        ] {
            fails(run(&[step], payload), FailureKind::Parse, LIMIT);
        }
    }
    let message = run(&[map(".")], &deep).unwrap_err().to_string();
    assert_eq!(
        message,
        format!("step 0 (map[0]): parse: payload nests arrays and objects {LIMIT}")
    );
    // At the limit the payload is read and written back whole.
    let deepest = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
    assert_eq!(run(&[map(".")], &deepest).unwrap()[0].payload, deepest);
}

#[test]
fn outputs_nested_past_the_limit_fail_the_message() {
    let build = |levels: usize| format!("reduce range({levels}) as $i (0; [.])");
    fails(
        run(&[map(&build(100_000))], "null"),
        FailureKind::Eval,
        &format!("output nests arrays and objects {LIMIT}"),
    );
    // Among other outputs: none is emitted.
    fails(
        run(&[map(&format!("1, ({}), 2", build(100_000)))], "null"),
        FailureKind::Eval,
        "output nests",
    );
    fails(
        run(&[map(&build(MAX_DEPTH + 1))], "null"),
        FailureKind::Eval,
        "output nests",
    );
    let at_limit = run(&[map(&build(MAX_DEPTH))], "null").unwrap();
    assert_eq!(at_limit[0].payload.len(), 2 * MAX_DEPTH + 1);
    fails(
        run(&[filter(&build(100_000))], "null"),
        FailureKind::Eval,
        "filter yielded [[[[",
    );
}

#[test]
fn errors_holding_values_nested_past_the_limit_fail_the_message() {
    let deep = "reduce range(100000) as $i (0; [.])";
    for code in [
        format!("({deep}) | .a"),
        format!("error({deep})"),
        format!("({deep}) + 1"),
    ] {
        fails(
            run(&[map(&code)], "null"),
            FailureKind::Eval,
            "error holding a value nested deeper than 512 levels",
        );
    }
    // Within the limit the error reads as usual.
    fails(
        run(&[map("(reduce range(3) as $i (0; [.])) | .a")], "null"),
        FailureKind::Eval,
        r#"cannot index [[[0]]] with "a""#,
    );
}

/// A payload at the limit goes through jq's recursive filters (and is written back) within
/// the evaluator thread's stack, in this unoptimised build too.
#[test]
fn values_at_the_limit_fit_the_evaluator_stack() {
    let mut payload = String::from("1");
    // The innermost object holds an array: one level more.
    for level in 0..MAX_DEPTH - 1 {
        payload = if level % 2 == 0 {
            format!(r#"{{"k{level}": {payload}, "n": [{level}, "s"]}}"#)
        } else {
            format!("[{payload}, {level}]")
        };
    }
    let expressions = [
        ".",
        "walk(.)",
        "tojson | fromjson",
        "tostring",
        ". == .",
        "[.[]?] | length",
        "[..] | length",
        "[paths] | length",
        "[paths(scalars)] | length",
        "[.] | flatten | length",
        "del(.. | select(type == \"number\"))",
        "[., .] | sort | length",
        "{a: .} | .a | tojson | length",
        "[to_entries?] | length",
        "[getpath([paths][-1])]",
    ];
    let run_all = move || {
        for code in expressions {
            let outputs = run(&[map(code)], &payload).unwrap_or_else(|e| panic!("{code}: {e}"));
            assert!(!outputs.is_empty(), "{code}");
        }
    };
    // The stack of the worker's evaluator threads.
    std::thread::Builder::new()
        .stack_size(8 * 1024 * 1024)
        .spawn(run_all)
        .unwrap()
        .join()
        .unwrap();
}
