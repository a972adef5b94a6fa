//! Engine errors → HTTP status and OperationOutcome.
//!
//! | error kind                  | status | `issue.code`    |
//! |-----------------------------|--------|-----------------|
//! | invalid body / bad request  | 400    | `structure` / `invalid` |
//! | token missing or bad        | 401    | `login` (with `WWW-Authenticate`) |
//! | scopes do not grant it      | 403    | `forbidden` (with `WWW-Authenticate`) |
//! | unknown tenant, type, id    | 404    | `not-found`     |
//! | method not allowed          | 405    | `not-supported` |
//! | unacceptable `Accept`       | 406    | `not-supported` |
//! | concurrent-write conflict   | 409    | `conflict`      |
//! | deleted                     | 410    | `deleted`       |
//! | `If-Match` mismatch         | 412    | `conflict`      |
//! | body or bundle too large    | 413    | `too-costly`    |
//! | search past its bounds      | 400    | `too-costly`    |
//! | unsupported `Content-Type`  | 415    | `not-supported` |
//! | FHIR invariant violated     | 422    | `invariant`     |
//! | not conformant (strict)     | 422    | per issue       |
//! | interaction not implemented | 501    | `not-supported` |
//! | storage failure             | 500    | `exception`     |
//! | issuer's keys unreachable   | 503    | `transient`     |

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use fjord_engine::{EngineError, PatchError, ValidationIssue, ValidationSeverity as Severity};
use serde_json::json;

use crate::negotiate::{self, Negotiated};

/// An error answered as an OperationOutcome.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Expression path of the offending element, when known.
    pub expression: Option<String>,
    /// Further issues of the same error (every rule a resource breaks).
    pub more: Vec<Detail>,
    /// Format the outcome is written in.
    pub format: Negotiated,
    /// `WWW-Authenticate` (RFC 6750) of a 401 or 403.
    pub challenge: Option<String>,
}

/// One more issue of an error: its own severity, code, message and path.
#[derive(Debug, Clone)]
pub struct Detail {
    pub severity: &'static str,
    pub code: &'static str,
    pub message: String,
    pub expression: Option<String>,
}

impl Detail {
    fn of(issue: ValidationIssue) -> Detail {
        Detail {
            severity: issue.severity.as_str(),
            code: issue.code.as_str(),
            message: issue.message,
            expression: Some(issue.expression),
        }
    }
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            expression: None,
            more: Vec::new(),
            format: Negotiated::default(),
            challenge: None,
        }
    }

    /// The OperationOutcome that tells the client.
    pub fn outcome(&self) -> serde_json::Value {
        let issue = |severity: &str, code: &str, message: &str, expression: &Option<String>| {
            let mut issue = json!({ "severity": severity, "code": code, "diagnostics": message });
            if let Some(expression) = expression {
                issue["expression"] = json!([expression]);
            }
            issue
        };
        let issues: Vec<serde_json::Value> =
            std::iter::once(issue("error", self.code, &self.message, &self.expression))
                .chain(
                    self.more
                        .iter()
                        .map(|d| issue(d.severity, d.code, &d.message, &d.expression)),
                )
                .collect();
        json!({ "resourceType": "OperationOutcome", "issue": issues })
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid", message)
    }

    /// The same error, written in the client's format.
    pub fn in_format(mut self, format: Negotiated) -> ApiError {
        self.format = format;
        self
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.message)
    }
}

/// The HTTP status and issue code of an engine error.
fn status_of(error: &EngineError) -> (StatusCode, &'static str) {
    match error {
        EngineError::UnknownTenant(_) | EngineError::UnknownType(_) | EngineError::NotFound(_) => {
            (StatusCode::NOT_FOUND, "not-found")
        }
        EngineError::Gone(_) => (StatusCode::GONE, "deleted"),
        EngineError::Suspended(_) => (StatusCode::SERVICE_UNAVAILABLE, "suspended"),
        EngineError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "transient"),
        EngineError::TimedOut(_) => (StatusCode::SERVICE_UNAVAILABLE, "timeout"),
        EngineError::Invalid(_) => (StatusCode::BAD_REQUEST, "structure"),
        EngineError::BadRequest(_) => (StatusCode::BAD_REQUEST, "invalid"),
        EngineError::Unprocessable(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invariant"),
        EngineError::NotConformant(issues) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            issues.first().map_or("invalid", |i| i.code.as_str()),
        ),
        EngineError::Search(_) => (StatusCode::UNPROCESSABLE_ENTITY, "processing"),
        EngineError::Rejected(_) => (StatusCode::UNPROCESSABLE_ENTITY, "business-rule"),
        EngineError::PreconditionFailed(_) => (StatusCode::PRECONDITION_FAILED, "conflict"),
        EngineError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
        EngineError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too-costly"),
        EngineError::TooCostly(_) => (StatusCode::BAD_REQUEST, "too-costly"),
        EngineError::NotSupported(_) => (StatusCode::NOT_IMPLEMENTED, "not-supported"),
        EngineError::Immutable(_) => (StatusCode::METHOD_NOT_ALLOWED, "not-supported"),
        EngineError::Patch(PatchError::Malformed(_)) => (StatusCode::BAD_REQUEST, "invalid"),
        EngineError::Patch(PatchError::NotApplicable(_)) => {
            (StatusCode::UNPROCESSABLE_ENTITY, "processing")
        }
        EngineError::DanglingReference { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "not-found"),
        EngineError::StillReferenced { .. } => (StatusCode::CONFLICT, "conflict"),
        EngineError::InEntry(_, inner) => status_of(inner),
        EngineError::Auth(auth) => {
            let api = crate::auth::auth_error(auth.clone());
            (api.status, api.code)
        }
        EngineError::Store(_) | EngineError::Internal(_) => {
            (StatusCode::INTERNAL_SERVER_ERROR, "exception")
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> ApiError {
        let (status, code) = status_of(&error);
        match status {
            // The database away, or the tenant suspended: expected in operation, and many at once.
            StatusCode::SERVICE_UNAVAILABLE => {
                tracing::warn!(error = %error, "interaction refused")
            }
            StatusCode::NOT_IMPLEMENTED => {}
            status if status.is_server_error() => {
                tracing::error!(error = %error, "interaction failed")
            }
            _ => {}
        }
        let mut api = ApiError::new(status, code, error.to_string());
        let (entry, error) = match error {
            EngineError::InEntry(index, inner) => (Some(index), *inner),
            other => (None, other),
        };
        match error {
            EngineError::Invalid(parse) => {
                api.message = format!("invalid resource: {}", parse.message);
                api.expression = parse.path;
            }
            // One issue per rule broken.
            EngineError::Unprocessable(violations) => {
                let mut violations = violations.into_iter();
                if let Some(first) = violations.next() {
                    api.message = first.message;
                    api.expression = first.path;
                }
                api.more = violations
                    .map(|v| Detail {
                        severity: "error",
                        code: "invariant",
                        message: v.message,
                        expression: v.path,
                    })
                    .collect();
            }
            // Every issue validation found, errors first (the first is the error's own).
            EngineError::NotConformant(issues) => {
                let mut issues = issues.into_iter();
                if let Some(first) = issues.next() {
                    api.message = first.message;
                    api.expression = Some(first.expression);
                }
                api.more = issues.map(Detail::of).collect();
            }
            EngineError::DanglingReference { path, .. } => api.expression = Some(path),
            // The challenge belongs to the request; an entry of a bundle only has its status.
            EngineError::Auth(auth) if entry.is_none() => {
                api.challenge = crate::auth::auth_error(auth).challenge
            }
            _ => {}
        }
        if let Some(index) = entry {
            // The entry, and within it the resource's element when one is named.
            api.expression = Some(in_entry(index, api.expression.take()));
            for detail in &mut api.more {
                detail.expression = Some(in_entry(index, detail.expression.take()));
                detail.message = format!("bundle entry {index}: {}", detail.message);
            }
            if !api.message.starts_with("bundle entry") {
                api.message = format!("bundle entry {index}: {}", api.message);
            }
        }
        api
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        if self.code == "transient" {
            // The database is away (restarting, failing over): soon, not at once.
            response.insert_header((actix_web::http::header::RETRY_AFTER, "1"));
        }
        if let Some(challenge) = &self.challenge {
            response.insert_header((
                actix_web::http::header::WWW_AUTHENTICATE,
                challenge.as_str(),
            ));
        }
        negotiate::respond_value(response, &self.outcome(), self.format)
    }
}

/// An OperationOutcome of one information issue, for `Prefer: return=OperationOutcome` and deletes.
/// A resource's path as the path within entry `index` of a bundle.
fn in_entry(index: usize, path: Option<String>) -> String {
    match path {
        Some(path) => match path.split_once('.') {
            Some((_, element)) => format!("Bundle.entry[{index}].resource.{element}"),
            None => format!("Bundle.entry[{index}].resource"),
        },
        None => format!("Bundle.entry[{index}]"),
    }
}

/// What a write stored despite its validation issues (the tenant validates leniently, or
/// strictly and only warnings were found): one issue per issue, after `message`.
pub(crate) fn stored_with_issues(message: &str, issues: &[ValidationIssue]) -> serde_json::Value {
    let mut outcome = information(message);
    for issue in issues {
        outcome["issue"]
            .as_array_mut()
            .expect("an issue list")
            .push(json!({
                // Stored all the same: what would have been an error is a warning here.
                "severity": issue.severity.max(Severity::Warning).as_str(),
                "code": issue.code.as_str(),
                "diagnostics": issue.message,
                "expression": [issue.expression],
            }));
    }
    outcome
}

pub fn information(message: &str) -> serde_json::Value {
    json!({
        "resourceType": "OperationOutcome",
        "issue": [{ "severity": "information", "code": "informational", "diagnostics": message }]
    })
}

pub(crate) async fn method_not_allowed(req: HttpRequest) -> HttpResponse {
    let message = format!("{} is not allowed on {}", req.method(), req.path());
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "not-supported", message)
        .in_format(negotiate::lenient(&req))
        .error_response()
}
