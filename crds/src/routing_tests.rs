use serde_json::json;

use super::*;

fn pipeline(spec: serde_json::Value) -> Pipeline {
    serde_json::from_value(json!({
        "apiVersion": "jetflow.io/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": "p"},
        "spec": spec,
    }))
    .unwrap()
}

fn stream(name: &str, subjects: &[&str]) -> StreamSubjects {
    StreamSubjects {
        name: name.into(),
        subjects: subjects.iter().map(|s| (*s).to_owned()).collect(),
        stores_as_captured: true,
    }
}

fn js_to_js(filters: &[&str], steps: serde_json::Value, subject: Option<&str>) -> Pipeline {
    let mut sink = json!({"stream": "COPY"});
    if let Some(s) = subject {
        sink["subject"] = json!(s);
    }
    pipeline(json!({
        "source": {"jetstream": {"stream": "ORDERS", "filterSubjects": filters}},
        "steps": steps,
        "sink": {"jetstream": sink},
    }))
}

fn orders_and_copy() -> (StreamSubjects, StreamSubjects) {
    (stream("ORDERS", &["orders.>"]), stream("COPY", &["copy.>"]))
}

fn with<'a>(source: &'a StreamSubjects, sink: &'a StreamSubjects) -> Streams<'a> {
    Streams {
        source: Some(source),
        sink: Some(sink),
    }
}

fn one(errors: &[FieldError], field: &str, parts: &[&str]) {
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].field, field, "{errors:?}");
    for part in parts {
        assert!(
            errors[0].message.contains(part),
            "{part}: {}",
            errors[0].message
        );
    }
}

#[test]
fn the_default_subject_without_set_subject_is_refused_without_the_streams() {
    let p = js_to_js(&[], json!([]), None);
    one(
        &check(&p),
        "spec.sink.jetstream.subject",
        &[
            "{{subject}}",
            "source stream ORDERS",
            "sink stream COPY",
            "for ever",
        ],
    );
    // Reported once: the stream-based check leaves it to the spec's validation.
    let (orders, copy) = orders_and_copy();
    assert!(check_streams(&p, with(&orders, &copy)).is_empty());

    let same = pipeline(json!({
        "source": {"jetstream": {"stream": "ORDERS", "filterSubjects": ["orders.eu.>"]}},
        "sink": {"jetstream": {"stream": "ORDERS", "subject": "{{ subject }}"}},
    }));
    one(
        &check(&same),
        "spec.sink.jetstream.subject",
        &["the stream the pipeline reads"],
    );

    let core_sink = pipeline(json!({
        "source": {"jetstream": {"stream": "ORDERS"}},
        "sink": {"core": {}},
    }));
    one(
        &check(&core_sink),
        "spec.sink.core.subject",
        &["source stream ORDERS"],
    );
}

#[test]
fn a_prefixed_subject_passes_both_checks() {
    let p = js_to_js(&["orders.eu.>"], json!([]), Some("copy.{{subject}}"));
    assert!(check(&p).is_empty());
    let (orders, copy) = orders_and_copy();
    assert!(check_streams(&p, with(&orders, &copy)).is_empty());
}

#[test]
fn set_subject_to_the_subject_is_refused_against_the_streams() {
    let p = js_to_js(&[], json!([{"setSubject": "{{subject}}"}]), None);
    assert!(check(&p).is_empty());
    let (orders, copy) = orders_and_copy();
    one(
        &check_streams(&p, with(&orders, &copy)),
        "spec.sink.jetstream.subject",
        &[
            "outputs go to orders.>",
            "spec.steps[0].setSubject",
            "sink stream COPY (subjects copy.>) does not capture",
            "source stream ORDERS captures them",
            "read again",
        ],
    );
}

#[test]
fn a_subject_the_sink_stream_cannot_capture_is_refused() {
    let p = js_to_js(&["orders.eu.*"], json!([]), Some("archive.{{token(3)}}"));
    let (orders, copy) = orders_and_copy();
    one(
        &check_streams(&p, with(&orders, &copy)),
        "spec.sink.jetstream.subject",
        &["archive.*", "filterSubjects[0] orders.eu.*", "copy.>"],
    );
    // A token the filter fixes is known.
    let p = js_to_js(
        &["orders.eu.*"],
        json!([]),
        Some("copy.{{token(2)}}.{{token(3)}}"),
    );
    assert!(check_streams(&p, with(&orders, &copy)).is_empty());
    let eu_only = stream("COPY", &["copy.us.>"]);
    one(
        &check_streams(&p, with(&orders, &eu_only)),
        "spec.sink.jetstream.subject",
        &["copy.eu.*"],
    );
}

#[test]
fn what_a_payload_field_decides_is_left_to_the_run_time() {
    let (orders, _) = orders_and_copy();
    let out = stream("OUT", &["out.eu.>"]);
    let p = pipeline(json!({
        "source": {"jetstream": {"stream": "ORDERS"}},
        "steps": [{"setSubject": "out.{{payload.r}}.x"}],
        "sink": {"jetstream": {"stream": "OUT"}},
    }));
    assert!(check(&p).is_empty());
    assert!(check_streams(&p, with(&orders, &out)).is_empty());
    let elsewhere = stream("OUT", &["other.>"]);
    one(
        &check_streams(&p, with(&orders, &elsewhere)),
        "spec.sink.jetstream.subject",
        &["out.{{payload.r}}.x", "other.>"],
    );
}

#[test]
fn writing_into_the_stream_read_whole_is_refused() {
    let p = pipeline(json!({
        "source": {"jetstream": {"stream": "ALL"}},
        "sink": {"jetstream": {"stream": "ALL", "subject": "out.{{subject}}"}},
    }));
    one(
        &check(&p),
        "spec.sink.jetstream.stream",
        &["reads all of it"],
    );
}

#[test]
fn writing_into_the_stream_read_outside_the_filters_is_allowed() {
    let all = stream("ALL", &["in.>", "out.>"]);
    let ok = pipeline(json!({
        "source": {"jetstream": {"stream": "ALL", "filterSubjects": ["in.>"]}},
        "sink": {"jetstream": {"stream": "ALL", "subject": "out.{{token(2)}}"}},
    }));
    assert!(check(&ok).is_empty());
    assert!(check_streams(&ok, with(&all, &all)).is_empty());
    let looping = pipeline(json!({
        "source": {"jetstream": {"stream": "ALL", "filterSubjects": ["in.>"]}},
        "sink": {"jetstream": {"stream": "ALL", "subject": "in.copy.{{token(2)}}"}},
    }));
    one(
        &check(&looping),
        "spec.sink.jetstream.subject",
        &["in.copy.*", "filterSubjects[0] \"in.>\""],
    );
}

#[test]
fn a_sink_stream_without_subjects_is_refused() {
    let p = js_to_js(&[], json!([]), Some("copy.{{subject}}"));
    let (orders, _) = orders_and_copy();
    let mirror = stream("COPY", &[]);
    one(
        &check_streams(&p, with(&orders, &mirror)),
        "spec.sink.jetstream.stream",
        &["no subjects of its own"],
    );
}

#[test]
fn a_core_source_receiving_its_own_outputs_is_refused() {
    let identity = pipeline(json!({
        "source": {"core": {"subjects": ["orders.>"]}},
        "sink": {"jetstream": {"stream": "COPY"}},
    }));
    one(
        &check(&identity),
        "spec.sink.jetstream.subject",
        &["received on"],
    );
    let inside = pipeline(json!({
        "source": {"core": {"subjects": ["orders.>"]}},
        "sink": {"core": {"subject": "orders.copy.{{token(2)}}"}},
    }));
    one(
        &check(&inside),
        "spec.sink.core.subject",
        &["orders.copy.*", "spec.source.core.subjects[0] \"orders.>\""],
    );
    let outside = pipeline(json!({
        "source": {"core": {"subjects": ["orders.>"]}},
        "sink": {"core": {"subject": "copy.{{subject}}"}},
    }));
    assert!(check(&outside).is_empty());
}

#[test]
fn dead_letters_the_source_reads_again_are_refused() {
    let core = pipeline(json!({
        "source": {"core": {"subjects": ["orders.>", "jetflow.>"]}},
        "sink": {"core": {"subject": "copy.{{subject}}"}},
    }));
    one(
        &check(&core),
        "spec.errors.deadLetterSubject",
        &["\"jetflow.dlq.p\"", "subjects[1]"],
    );
    let skip = pipeline(json!({
        "source": {"core": {"subjects": ["orders.>", "jetflow.>"]}},
        "sink": {"core": {"subject": "copy.{{subject}}"}},
        "errors": {"policy": "Skip"},
    }));
    assert!(check(&skip).is_empty());

    let p = pipeline(json!({
        "source": {"jetstream": {"stream": "ORDERS"}},
        "sink": {"jetstream": {"stream": "COPY", "subject": "copy.{{subject}}"}},
        "errors": {"deadLetterSubject": "orders.failed"},
    }));
    let (orders, copy) = orders_and_copy();
    one(
        &check_streams(&p, with(&orders, &copy)),
        "spec.errors.deadLetterSubject",
        &["\"orders.failed\"", "source stream ORDERS"],
    );
}

#[test]
fn a_transformed_source_is_not_judged_on_its_filters() {
    let mut orders = stream("ORDERS", &["orders.>"]);
    orders.stores_as_captured = false;
    let copy = stream("COPY", &["orders.>"]);
    // Stored under other subjects than published: what the filters read cannot be told.
    let p = js_to_js(
        &["orders.eu.>"],
        json!([{"setSubject": "{{subject}}"}]),
        None,
    );
    let found = check_streams(&p, with(&orders, &copy));
    assert!(found.is_empty(), "{found:?}");
}

#[test]
fn many_outputs_wrong_alike_make_one_finding() {
    let filters: Vec<String> = (0..20).map(|i| format!("orders.r{i}.*")).collect();
    let filters: Vec<&str> = filters.iter().map(String::as_str).collect();
    let p = js_to_js(&filters, json!([]), Some("archive.{{token(2)}}"));
    let (orders, copy) = orders_and_copy();
    one(
        &check_streams(&p, with(&orders, &copy)),
        "spec.sink.jetstream.subject",
        &["archive.r0", "(and 19 more alike)"],
    );
}
