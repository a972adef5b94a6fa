use std::fmt;

/// Why a body is not a FHIR R4 resource. Carries the expression path of the offending element where
/// it can be found (`Patient.contact[0].name.bogus`), so a client can fix its input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ParseError {
    /// What is wrong, in fhirbolt's or serde's words.
    pub message: String,
    /// FHIRPath-like location of the offending element, when known.
    pub path: Option<String>,
}

impl ParseError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        ParseError {
            message: message.into(),
            path: None,
        }
    }

    pub(crate) fn at(message: impl Into<String>, path: impl Into<String>) -> Self {
        ParseError {
            message: message.into(),
            path: Some(path.into()),
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(path) => write!(f, "{} (at {path})", self.message),
            None => f.write_str(&self.message),
        }
    }
}
