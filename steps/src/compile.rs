//! Compiling a pipeline's steps: jq expressions through jaq, templates through
//! [`crate::template`], header names parsed. Runs once, at start (and in the operator's
//! validation); every error names the step by index.

use jetflow_crds::pipeline::Step;

use crate::headers::is_header_name;
use crate::jq::Jq;
use crate::template::{SubjectTemplate, Template};
use crate::{CompileError, StepError, Steps};

/// One compiled step.
#[derive(Debug)]
pub(crate) struct Compiled {
    /// `name`, or `kind[index]`.
    pub name: String,
    pub kind: Kind,
}

#[derive(Debug)]
pub(crate) enum Kind {
    Filter(Jq),
    Map(Jq),
    SetSubject(SubjectTemplate),
    SetHeaders(Vec<(String, Template)>),
    /// Header names as written; matched exactly (NATS header names are case-sensitive).
    DropHeaders(Vec<String>),
}

impl Steps {
    /// Whether a step reads or changes headers (`$headers`, `setHeaders`, `dropHeaders`): only
    /// then do the steps need the input's headers.
    pub fn uses_headers(&self) -> bool {
        self.steps.iter().any(|s| match &s.kind {
            Kind::Filter(jq) | Kind::Map(jq) => jq.uses_headers,
            Kind::SetHeaders(_) | Kind::DropHeaders(_) => true,
            Kind::SetSubject(_) => false,
        })
    }

    /// Compiles the steps: every jq expression (with `$subject`, `$headers` and `$seq`
    /// declared), every template and header name. The first step that does not compile is
    /// reported, with the jq or template error quoted.
    pub fn compile(steps: &[Step]) -> Result<Steps, CompileError> {
        let steps = steps
            .iter()
            .enumerate()
            .map(|(index, step)| compile_step(index, step))
            .collect::<Result<_, _>>()?;
        Ok(Steps { steps })
    }

    /// Whether messages pass through untouched (no step at all); the worker then never parses
    /// or copies payloads.
    pub fn is_passthrough(&self) -> bool {
        self.steps.is_empty()
    }

    /// The steps' names in order (`name`, or `kind[index]` when unnamed), for metrics and
    /// logs.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.steps.iter().map(|s| s.name.as_str())
    }

    pub(crate) fn compiled(&self) -> &[Compiled] {
        &self.steps
    }
}

fn kind_name(step: &Step) -> &'static str {
    if step.filter.is_some() {
        "filter"
    } else if step.map.is_some() {
        "map"
    } else if step.set_subject.is_some() {
        "setSubject"
    } else if step.set_headers.is_some() {
        "setHeaders"
    } else if step.drop_headers.is_some() {
        "dropHeaders"
    } else {
        "step"
    }
}

fn compile_step(index: usize, step: &Step) -> Result<Compiled, CompileError> {
    let kind = kind_name(step);
    let name = step
        .name
        .clone()
        .unwrap_or_else(|| format!("{kind}[{index}]"));
    let err = |reason: StepError| CompileError {
        index,
        name: name.clone(),
        reason,
    };
    let set = [
        step.filter.is_some(),
        step.map.is_some(),
        step.set_subject.is_some(),
        step.set_headers.is_some(),
        step.drop_headers.is_some(),
    ];
    if set.iter().filter(|s| **s).count() != 1 {
        return Err(err(StepError::NotOneKind));
    }
    let compiled = if let Some(code) = &step.filter {
        Kind::Filter(Jq::compile(code).map_err(|source| {
            err(StepError::Jq {
                field: "filter",
                source,
            })
        })?)
    } else if let Some(code) = &step.map {
        Kind::Map(Jq::compile(code).map_err(|source| {
            err(StepError::Jq {
                field: "map",
                source,
            })
        })?)
    } else if let Some(t) = &step.set_subject {
        Kind::SetSubject(SubjectTemplate::compile(t).map_err(|e| err(StepError::SetSubject(e)))?)
    } else if let Some(headers) = &step.set_headers {
        let mut out = Vec::with_capacity(headers.len());
        for (key, value) in headers {
            if !is_header_name(key) {
                return Err(err(StepError::SetHeaderName { name: key.clone() }));
            }
            if value.contains(['\r', '\n']) {
                return Err(err(StepError::SetHeaderLineBreak { name: key.clone() }));
            }
            let template = Template::parse(value, true).map_err(|source| {
                err(StepError::SetHeaderTemplate {
                    name: key.clone(),
                    source,
                })
            })?;
            out.push((key.clone(), template));
        }
        Kind::SetHeaders(out)
    } else {
        let names = step.drop_headers.clone().unwrap_or_default();
        if let Some(bad) = names.iter().find(|n| !is_header_name(n)) {
            return Err(err(StepError::DropHeaderName { name: bad.clone() }));
        }
        Kind::DropHeaders(names)
    };
    Ok(Compiled {
        name,
        kind: compiled,
    })
}
