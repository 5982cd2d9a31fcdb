//! jetflow's pipeline steps: the transformations between source and sink.
//!
//! A pipeline's steps are compiled once, at start ([`Steps::compile`]); a step that does not
//! compile is rejected before any message moves, with an error that names the step by index.
//! [`check`] runs the same compilation for the operator's validation. [`Steps::apply`] runs the
//! steps over one message and returns its outputs: none (filtered out), one, or several (a
//! `map` with several outputs); output `i` of a message gets output index `i` in its message id.
//!
//! ```text
//!  Input ──▶ step 0 ──▶ step 1 ──▶ … ──▶ Vec<Output>
//!  bytes     payload parsed at most once, on the first step that reads it;
//!            written back to bytes once, at the end, only if a `map` replaced it
//! ```
//!
//! - `filter` (jq): the message is kept when the expression's first output is `true`; `false`,
//!   `null` or no output drops it; any other value, or an error raised before the first output,
//!   fails the message. Later outputs are not evaluated.
//! - `map` (jq): each output replaces the payload and becomes one message, in the order jq
//!   yields them; no output drops the message; an error fails the whole message (no partial
//!   outputs), as does more than [`MAX_OUTPUTS`] outputs.
//! - A payload, or an output of a step, that nests arrays and objects deeper than
//!   [`MAX_DEPTH`] levels fails the message (kind parse for a payload, eval for an output):
//!   nothing deeper reaches code that recurses over it, so no payload can exhaust a stack
//!   (jaq itself still recurses over deep values an expression builds and uses up within
//!   itself).
//! - `setSubject`, `setHeaders`, `dropHeaders`: see [`template`] for the template forms.
//!
//! Payload bytes are never parsed unless a jq step runs or a template reads `{{payload.…}}`,
//! and are passed on untouched unless a `map` step replaced them.
//!
//! Failures are per message ([`StepFailure`], kind parse or eval; the worker adds timeout when
//! the steps overrun their budget on a message); the worker applies the pipeline's error
//! policy to them. Nothing here blocks or spawns; what is kept between messages is buffers per
//! thread (for reading payloads and writing outputs), never anything of a message.

use bytes::Bytes;
use jetflow_crds::pipeline::Step;

mod apply;
mod compile;
mod depth;
mod headers;
mod jq;
mod json;
mod simple;
pub mod template;
#[cfg(test)]
mod tests;

pub use apply::MAX_OUTPUTS;
pub use depth::MAX_DEPTH;
pub use headers::Headers;
pub use jq::{JqError, Position, SyntaxProblem, UndefinedName};
pub use json::ParseError;
pub use template::{RenderError, SubjectTemplate, TemplateError};

/// One message entering the steps.
#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    /// The subject the message was read from.
    pub subject: &'a str,
    /// Its headers, if any. Needed only when [`Steps::uses_headers`]: otherwise no step looks
    /// at them and `None` will do.
    pub headers: Option<&'a Headers>,
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
    pub headers: OutputHeaders,
    /// The payload.
    pub payload: Bytes,
}

/// The headers of an [`Output`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutputHeaders {
    /// The input's, as they came: no step changed them.
    Unchanged,
    /// As a step left them; `None` when none is left.
    Changed(Option<Headers>),
}

/// A step that does not compile.
///
/// Displays as `spec.steps[2] (map[2]): map: jq error: undefined filter foo/0 at column 1`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("spec.steps[{index}] ({name}): {reason}")]
pub struct CompileError {
    /// The step's index in `spec.steps`.
    pub index: usize,
    /// The step's name, or `kind[index]` (such as `map[2]`) when unnamed.
    pub name: String,
    /// What is wrong.
    pub reason: StepError,
}

/// What is wrong with a step that does not compile.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StepError {
    /// None, or more than one, of the step kinds is set.
    #[error("set exactly one of filter, map, setSubject, setHeaders and dropHeaders")]
    NotOneKind,
    /// A `filter` or `map` expression does not compile.
    #[error("{field}: {source}")]
    Jq {
        /// `filter` or `map`.
        field: &'static str,
        /// The jq error.
        source: JqError,
    },
    /// The `setSubject` template does not parse.
    #[error("setSubject: {0}")]
    SetSubject(#[source] TemplateError),
    /// A `setHeaders` name is not a header name.
    #[error("setHeaders: {name:?} is not a header name")]
    SetHeaderName {
        /// The name.
        name: String,
    },
    /// A `setHeaders` value has a line break.
    #[error("setHeaders.{name}: header values must not contain line breaks")]
    SetHeaderLineBreak {
        /// The header's name.
        name: String,
    },
    /// A `setHeaders` value's template does not parse.
    #[error("setHeaders.{name}: {source}")]
    SetHeaderTemplate {
        /// The header's name.
        name: String,
        /// The template error.
        source: TemplateError,
    },
    /// A `dropHeaders` name is not a header name.
    #[error("dropHeaders: {name:?} is not a header name")]
    DropHeaderName {
        /// The name.
        name: String,
    },
}

/// Why a message could not pass the steps.
///
/// Displays as `step 1 (map[1]): eval: cannot index "x" with "b"`. The message text is cut at
/// [`MAX_ERROR_LEN`] bytes (jq errors quote values, which may be whole payloads).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("step {index} ({name}): {kind}: {message}")]
pub struct StepFailure {
    /// The failing step's index.
    pub index: usize,
    /// The failing step's name (as in [`CompileError::name`]).
    pub name: String,
    /// What kind of failure.
    pub kind: FailureKind,
    /// The error text.
    pub message: String,
}

/// The longest [`StepFailure::message`], in bytes; headers carry it to the dead-letter subject.
pub const MAX_ERROR_LEN: usize = 1024;

/// Kinds of step failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// The payload is not JSON.
    Parse,
    /// The expression failed on this message.
    Eval,
    /// The steps did not finish within their time budget on this message (the worker's
    /// `--step-timeout`).
    Timeout,
}

impl FailureKind {
    /// A stable category for metrics and headers.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Parse => "parse",
            Self::Eval => "eval",
            Self::Timeout => "timeout",
        }
    }
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A pipeline's compiled steps; shared by all split readers of a worker (`Send + Sync`).
#[derive(Debug)]
pub struct Steps {
    steps: Vec<compile::Compiled>,
}

/// Compiles the steps and reports the first that does not compile; the operator calls this
/// when it validates a Pipeline.
pub fn check(steps: &[Step]) -> Result<(), CompileError> {
    Steps::compile(steps).map(|_| ())
}
