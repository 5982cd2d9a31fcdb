//! Output subject templates (`copy.{{subject}}`, `out.{{token(2)}}.x`), compiled once at
//! start and rendered per message without parsing the template again. The syntax is the one
//! [`jetflow_crds::validate::check_subject_template`] accepts (without payload fields, which
//! only the `setSubject` step offers).

use async_nats::Subject;

/// A compiled subject template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubjectTemplate {
    parts: Vec<Part>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Literal(String),
    Subject,
    /// 0-based token index.
    Token(usize),
}

/// Why a template could not be compiled or rendered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The template is not valid.
    #[error("invalid subject template: {0}")]
    Invalid(String),
    /// The subject has fewer tokens than the template uses.
    #[error("subject {subject:?} has no token {token} (template uses token({token}))")]
    MissingToken {
        /// The subject.
        subject: String,
        /// The 1-based token.
        token: usize,
    },
}

impl SubjectTemplate {
    /// Compiles a template.
    pub fn compile(template: &str) -> Result<Self, TemplateError> {
        jetflow_crds::validate::check_subject_template(template, false)
            .map_err(TemplateError::Invalid)?;
        let mut parts = Vec::new();
        let mut rest = template;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Literal(rest[..start].to_owned()));
            }
            let end = rest[start..]
                .find("}}")
                .ok_or_else(|| TemplateError::Invalid(template.to_owned()))?;
            let inner = rest[start + 2..start + end].trim();
            if inner == "subject" {
                parts.push(Part::Subject);
            } else {
                let n: usize = inner
                    .strip_prefix("token(")
                    .and_then(|t| t.strip_suffix(')'))
                    .and_then(|n| n.trim().parse().ok())
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| TemplateError::Invalid(template.to_owned()))?;
                parts.push(Part::Token(n - 1));
            }
            rest = &rest[start + end + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_owned()));
        }
        Ok(Self { parts })
    }

    /// Whether the template is `{{subject}}`: the output keeps the subject as it is.
    pub fn is_identity(&self) -> bool {
        self.parts == [Part::Subject]
    }

    /// The output subject for `subject`.
    pub fn render(&self, subject: &Subject) -> Result<Subject, TemplateError> {
        if self.is_identity() {
            return Ok(subject.clone());
        }
        let mut out = String::with_capacity(subject.len() + 16);
        for part in &self.parts {
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::Subject => out.push_str(subject),
                Part::Token(i) => {
                    let token =
                        subject
                            .split('.')
                            .nth(*i)
                            .ok_or_else(|| TemplateError::MissingToken {
                                subject: subject.to_string(),
                                token: i + 1,
                            })?;
                    out.push_str(token);
                }
            }
        }
        Ok(Subject::from(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_subject_and_tokens() {
        let s = Subject::from("orders.eu.created");
        let t = SubjectTemplate::compile("{{subject}}").unwrap();
        assert!(t.is_identity());
        assert_eq!(t.render(&s).unwrap().as_str(), "orders.eu.created");
        let t = SubjectTemplate::compile("copy.{{subject}}").unwrap();
        assert_eq!(t.render(&s).unwrap().as_str(), "copy.orders.eu.created");
        let t = SubjectTemplate::compile("out.{{ token(2) }}.{{token(3)}}").unwrap();
        assert_eq!(t.render(&s).unwrap().as_str(), "out.eu.created");
        let t = SubjectTemplate::compile("out.{{token(4)}}").unwrap();
        assert!(matches!(
            t.render(&s),
            Err(TemplateError::MissingToken { token: 4, .. })
        ));
        assert!(SubjectTemplate::compile("out.{{payload.x}}").is_err());
    }
}
