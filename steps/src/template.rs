//! Subject and header templates: `{{subject}}`, `{{token(N)}}` (1-based subject token) and
//! `{{payload.a.b}}` (a field of the JSON payload), between literal text.
//!
//! A template is parsed once ([`SubjectTemplate::compile`]) and rendered per message without
//! reparsing. The `setSubject` and `setHeaders` steps use it, and so does the worker's sink for
//! its subject (`{{subject}}` and `{{token(N)}}` only), so that there is one implementation.
//! Rendering fails, rather than guessing, when a token or field is missing or the result is not
//! a valid subject.

use jaq_json::Val;
use jetflow_crds::validate::{check_subject, check_subject_template};

use crate::json::{self, ParseError};

/// A template that does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    /// `{{` without `}}` after it.
    #[error("template {template:?}: '{{{{' without a closing '}}}}'")]
    Unclosed {
        /// The template.
        template: String,
    },
    /// A placeholder other than the ones allowed.
    #[error("template {template:?}: unknown placeholder {{{{{placeholder}}}}}; use {allowed}")]
    UnknownPlaceholder {
        /// The template.
        template: String,
        /// The text between the braces, trimmed.
        placeholder: String,
        /// The placeholders allowed where the template is used.
        allowed: &'static str,
    },
    /// The template cannot render a valid subject (its literal text or its form), as the
    /// Pipeline validation reports it.
    #[error("{reason}")]
    InvalidSubject {
        /// The template.
        template: String,
        /// What is wrong.
        reason: String,
    },
}

/// Why a template could not be rendered for one message.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// `{{token(N)}}` with fewer than N tokens in the subject.
    #[error("subject {subject:?} has no token {n}")]
    MissingToken {
        /// The subject rendered from.
        subject: String,
        /// The 1-based token asked for.
        n: usize,
    },
    /// The payload cannot be read: not JSON, or nested too deep (only for templates that
    /// read it).
    #[error("{0}")]
    Payload(#[source] ParseError),
    /// `{{payload.a.b}}` where the payload has no such field, or it is null.
    #[error("payload field {0} is missing or null")]
    MissingField(String),
    /// A field whose value is an object or an array.
    #[error("payload field {field} is {kind}, not a string, number or boolean")]
    NotScalar {
        /// The field path.
        field: String,
        /// `an object` or `an array`.
        kind: &'static str,
    },
    /// The rendered text is not a valid subject.
    #[error("rendered subject is invalid: {reason}")]
    InvalidSubject {
        /// The rendered text.
        subject: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A template that reads the payload, rendered without one
    /// ([`SubjectTemplate::render_subject`]).
    #[error("the template reads the payload, which is not available here")]
    NeedsPayload,
    /// The rendered text cannot be a header value.
    #[error("rendered header value {0:?} contains a line break")]
    InvalidHeaderValue(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Literal(String),
    Subject,
    /// 0-based index of the subject token.
    Token(usize),
    /// Field path, kept whole for error messages, and its segments.
    Payload(String, Vec<Segment>),
}

/// One segment of a payload field path: an object key (made a jq value once, here), or also an
/// array index when it is a number.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Segment {
    key: Val,
    index: Option<usize>,
}

/// A parsed template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// Parses the placeholders of `text`; literal text is taken as it is.
    pub(crate) fn parse(text: &str, payload: bool) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Literal(rest[..start].to_owned()));
            }
            let end = rest[start..]
                .find("}}")
                .ok_or_else(|| TemplateError::Unclosed {
                    template: text.to_owned(),
                })?;
            let inner = rest[start + 2..start + end].trim();
            parts.push(placeholder(text, inner, payload)?);
            rest = &rest[start + end + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_owned()));
        }
        Ok(Template { parts })
    }

    pub(crate) fn uses_payload(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Payload(..)))
    }

    /// Renders into `out`; `payload` is asked for only when the template reads a field.
    pub(crate) fn render_into<'p>(
        &self,
        out: &mut String,
        subject: &str,
        mut payload: impl FnMut() -> Result<&'p Val, RenderError>,
    ) -> Result<(), RenderError> {
        for part in &self.parts {
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::Subject => out.push_str(subject),
                Part::Token(i) => {
                    let token =
                        subject
                            .split('.')
                            .nth(*i)
                            .ok_or_else(|| RenderError::MissingToken {
                                subject: subject.to_owned(),
                                n: i + 1,
                            })?;
                    out.push_str(token);
                }
                Part::Payload(path, segments) => {
                    let value = field(payload()?, segments)
                        .ok_or_else(|| RenderError::MissingField(path.clone()))?;
                    scalar_into(out, path, value)?;
                }
            }
        }
        Ok(())
    }
}

fn placeholder(text: &str, inner: &str, payload: bool) -> Result<Part, TemplateError> {
    if inner == "subject" {
        return Ok(Part::Subject);
    }
    if let Some(n) = inner
        .strip_prefix("token(")
        .and_then(|t| t.strip_suffix(')'))
        .and_then(|n| n.trim().parse::<usize>().ok())
        .filter(|n| *n >= 1)
    {
        return Ok(Part::Token(n - 1));
    }
    if payload
        && let Some(path) = inner.strip_prefix("payload.")
        && !path.is_empty()
        && !path.contains(char::is_whitespace)
        && path.split('.').all(|s| !s.is_empty())
    {
        let segments = path
            .split('.')
            .map(|s| Segment {
                key: Val::from(s.to_owned()),
                index: s.parse().ok(),
            })
            .collect();
        return Ok(Part::Payload(path.to_owned(), segments));
    }
    let allowed = if payload {
        "{{subject}}, {{token(N)}} or {{payload.field}}"
    } else {
        "{{subject}} or {{token(N)}}"
    };
    Err(TemplateError::UnknownPlaceholder {
        template: text.to_owned(),
        placeholder: inner.to_owned(),
        allowed,
    })
}

/// Follows a field path: object keys, or array indexes for numeric segments.
fn field<'v>(mut value: &'v Val, segments: &[Segment]) -> Option<&'v Val> {
    for segment in segments {
        value = match value {
            Val::Obj(map) => map.get(&segment.key)?,
            Val::Arr(items) => items.get(segment.index?)?,
            _ => return None,
        };
    }
    (!matches!(value, Val::Null)).then_some(value)
}

fn scalar_into(out: &mut String, path: &str, value: &Val) -> Result<(), RenderError> {
    match value {
        Val::TStr(s) | Val::BStr(s) => out.push_str(&String::from_utf8_lossy(s)),
        Val::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Val::Num(n) => {
            let mut buf = Vec::new();
            // Through the JSON writer, so a number renders as it would in the payload.
            let _ = json::write(&mut buf, &Val::Num(n.clone()));
            out.push_str(&String::from_utf8_lossy(&buf));
        }
        Val::Arr(_) => {
            return Err(RenderError::NotScalar {
                field: path.to_owned(),
                kind: "an array",
            });
        }
        Val::Obj(_) => {
            return Err(RenderError::NotScalar {
                field: path.to_owned(),
                kind: "an object",
            });
        }
        Val::Null => return Err(RenderError::MissingField(path.to_owned())),
    }
    Ok(())
}

/// A subject template, parsed once and rendered per message.
///
/// ```
/// use jetflow_steps::template::SubjectTemplate;
///
/// let t = SubjectTemplate::compile("copy.{{token(2)}}.{{subject}}").unwrap();
/// assert_eq!(t.render("orders.eu.1", b"").unwrap(), "copy.eu.orders.eu.1");
///
/// let t = SubjectTemplate::compile("by-region.{{payload.region}}").unwrap();
/// assert_eq!(t.render("orders.1", br#"{"region":"eu"}"#).unwrap(), "by-region.eu");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubjectTemplate {
    template: Template,
    /// The whole template is `{{subject}}`: rendering is a copy.
    identity: bool,
}

impl SubjectTemplate {
    /// Parses a template that may read payload fields (the `setSubject` step).
    pub fn compile(template: &str) -> Result<SubjectTemplate, TemplateError> {
        Self::parse(template, true)
    }

    /// Parses a template over the subject only (`{{subject}}`, `{{token(N)}}`), as a sink's
    /// subject is: `{{payload.…}}` is rejected.
    pub fn compile_subject_only(template: &str) -> Result<SubjectTemplate, TemplateError> {
        Self::parse(template, false)
    }

    fn parse(text: &str, payload: bool) -> Result<SubjectTemplate, TemplateError> {
        check_subject_template(text, payload).map_err(|reason| TemplateError::InvalidSubject {
            template: text.to_owned(),
            reason,
        })?;
        let template = Template::parse(text, payload)?;
        let identity = template.parts == [Part::Subject];
        Ok(SubjectTemplate { template, identity })
    }

    /// Whether rendering reads the payload; when false, [`render`](Self::render) never looks
    /// at it.
    pub fn uses_payload(&self) -> bool {
        self.template.uses_payload()
    }

    /// Whether the template is `{{subject}}`: the output keeps the subject as it is.
    pub fn is_identity(&self) -> bool {
        self.identity
    }

    /// Renders a subject-only template (as a sink's is). A template that reads the payload
    /// fails with [`RenderError::NeedsPayload`]. (Where the template
    /// [is the identity](Self::is_identity), the caller can keep its subject instead.)
    pub fn render_subject(&self, subject: &str) -> Result<String, RenderError> {
        if self.uses_payload() {
            return Err(RenderError::NeedsPayload);
        }
        self.render_with(subject, unreachable_payload)
    }

    /// Renders the subject for a message read from `subject` with `payload`. The payload is
    /// parsed only when the template reads a field of it.
    pub fn render(&self, subject: &str, payload: &[u8]) -> Result<String, RenderError> {
        if !self.uses_payload() {
            return self.render_with(subject, unreachable_payload);
        }
        let parsed = json::parse_slice(payload).map_err(RenderError::Payload)?;
        self.render_with(subject, || Ok(&parsed))
    }

    /// Renders with a lazily parsed payload (the steps parse each payload at most once).
    pub(crate) fn render_with<'p>(
        &self,
        subject: &str,
        payload: impl FnMut() -> Result<&'p Val, RenderError>,
    ) -> Result<String, RenderError> {
        if self.identity {
            return Ok(subject.to_owned());
        }
        let mut out = String::with_capacity(subject.len() + 16);
        self.template.render_into(&mut out, subject, payload)?;
        // Literal parts were checked at compile time and tokens come from a valid subject;
        // only payload values can make the result invalid, so only then is it checked.
        if self.uses_payload()
            && let Err(reason) = check_subject(&out, false)
        {
            return Err(RenderError::InvalidSubject {
                subject: out,
                reason,
            });
        }
        Ok(out)
    }
}

fn unreachable_payload<'p>() -> Result<&'p Val, RenderError> {
    // Templates that do not use the payload never call this.
    Err(RenderError::NeedsPayload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_subject_and_tokens() {
        let t = SubjectTemplate::compile("out.{{token(3)}}.{{ token(1) }}.{{subject}}").unwrap();
        assert_eq!(t.render("a.b.c", b"").unwrap(), "out.c.a.a.b.c");
        let t = SubjectTemplate::compile_subject_only("{{subject}}").unwrap();
        assert_eq!(t.render("a.b", b"not json").unwrap(), "a.b");
    }

    #[test]
    fn render_subject_renders_subject_only_templates() {
        let subject = "orders.eu.1";
        let t = SubjectTemplate::compile_subject_only("{{subject}}").unwrap();
        assert!(t.is_identity());
        assert_eq!(t.render_subject(subject).unwrap(), subject);
        let t = SubjectTemplate::compile_subject_only("copy.{{token(2)}}").unwrap();
        assert!(!t.is_identity());
        assert_eq!(t.render_subject(subject).unwrap(), "copy.eu");
        let t = SubjectTemplate::compile("x.{{payload.a}}").unwrap();
        assert!(matches!(
            t.render_subject(subject),
            Err(RenderError::NeedsPayload)
        ));
    }

    #[test]
    fn missing_token_is_an_error() {
        let t = SubjectTemplate::compile("x.{{token(4)}}").unwrap();
        assert!(matches!(
            t.render("a.b", b""),
            Err(RenderError::MissingToken { subject, n: 4 }) if subject == "a.b"
        ));
    }

    #[test]
    fn payload_fields_render_scalars() {
        let t =
            SubjectTemplate::compile("r.{{payload.a.b}}.{{payload.n}}.{{payload.l.1}}").unwrap();
        let payload = br#"{"a":{"b":"eu"},"n":42,"l":["x","y"]}"#;
        assert_eq!(t.render("s", payload).unwrap(), "r.eu.42.y");
    }

    #[test]
    fn payload_problems_are_errors() {
        let t = SubjectTemplate::compile("r.{{payload.a}}").unwrap();
        assert!(matches!(
            t.render("s", br#"{"b":1}"#),
            Err(RenderError::MissingField(f)) if f == "a"
        ));
        assert!(matches!(
            t.render("s", br#"{"a":null}"#),
            Err(RenderError::MissingField(f)) if f == "a"
        ));
        assert!(matches!(
            t.render("s", br#"{"a":{"x":1}}"#),
            Err(RenderError::NotScalar { .. })
        ));
        assert!(matches!(
            t.render("s", br#"{"a":"has space"}"#),
            Err(RenderError::InvalidSubject { .. })
        ));
        assert!(matches!(
            t.render("s", br#"{"a":"*"}"#),
            Err(RenderError::InvalidSubject { .. })
        ));
        assert!(matches!(
            t.render("s", b"{oops"),
            Err(RenderError::Payload(ParseError::Syntax(_)))
        ));
    }

    #[test]
    fn subject_only_rejects_payload_fields() {
        assert!(SubjectTemplate::compile_subject_only("x.{{payload.a}}").is_err());
        assert!(SubjectTemplate::compile("x.{{payload.a}}").is_ok());
        assert!(SubjectTemplate::compile("x.{{nope}}").is_err());
        assert!(SubjectTemplate::compile("x.{{subject").is_err());
        assert!(SubjectTemplate::compile("x..y").is_err());
    }

    #[test]
    fn template_errors_name_what_is_wrong() {
        let e = Template::parse("a.{{subject", true).unwrap_err();
        assert_eq!(
            e,
            TemplateError::Unclosed {
                template: "a.{{subject".into()
            }
        );
        assert_eq!(
            e.to_string(),
            r#"template "a.{{subject": '{{' without a closing '}}'"#
        );
        let e = Template::parse("a.{{ nope }}", false).unwrap_err();
        assert!(
            matches!(&e, TemplateError::UnknownPlaceholder { placeholder, .. } if placeholder == "nope"),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            r#"template "a.{{ nope }}": unknown placeholder {{nope}}; use {{subject}} or {{token(N)}}"#
        );
        let e = SubjectTemplate::compile("x..y").unwrap_err();
        assert!(
            matches!(&e, TemplateError::InvalidSubject { template, .. } if template == "x..y"),
            "{e:?}"
        );
        let e = SubjectTemplate::compile("r.{{payload.a}}")
            .unwrap()
            .render("s", b"{oops")
            .unwrap_err();
        assert!(std::error::Error::source(&e).is_some(), "{e:?}");
    }

    #[test]
    fn header_templates_keep_any_literal_text() {
        let t = Template::parse("from {{subject}} (token {{token(2)}})", true).unwrap();
        let mut out = String::new();
        t.render_into(&mut out, "a.b", unreachable_payload).unwrap();
        assert_eq!(out, "from a.b (token b)");
        assert!(Template::parse("{{payload.}}", true).is_err());
        assert!(Template::parse("{{payload.a..b}}", true).is_err());
    }
}
