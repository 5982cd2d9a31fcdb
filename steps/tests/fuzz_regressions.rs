//! The fuzz targets' committed inputs as regression tests: every file under
//! `fuzz/regressions/<target>/` (inputs that once failed, kept with their fix) and
//! `fuzz/corpus/<target>/` (seeds) goes through the very check its fuzz target runs, so a
//! plain `cargo test` catches a regression without the fuzzer (`scripts/fuzz.sh` runs it).

#[path = "../../fuzz/checks/steps.rs"]
mod checks;

#[path = "../../fuzz/checks/inputs.rs"]
mod inputs;

#[test]
fn json_inputs() {
    inputs::check_all("json", checks::json);
}

#[test]
fn template_inputs() {
    inputs::check_all("template", checks::template);
}

#[test]
fn header_steps_inputs() {
    inputs::check_all("header_steps", checks::header_steps);
}

#[test]
fn headers_inputs() {
    inputs::check_all("headers", checks::headers);
}

/// The checker of JSON output the json target relies on tells JSON from what is not.
#[test]
fn strict_json_follows_the_grammar() {
    for good in [
        "null",
        " [1, -0.5e+3, \"a\\u00e9\\n\", {\"k\": [true, false, {}]}, []] ",
        "{\"a\":{\"b\":{}}}",
        "\"\"",
    ] {
        assert_eq!(checks::strict_json(good.as_bytes()), Ok(()), "{good}");
    }
    for bad in [
        "",
        "[1,]",
        "{\"a\" 1}",
        "01",
        "1.",
        "NaN",
        "[",
        "\"\\x\"",
        "\"a\nb\"",
        "{1:2}",
        "1 2",
        "[1}",
        "tru",
    ] {
        assert!(checks::strict_json(bad.as_bytes()).is_err(), "{bad}");
    }
}
