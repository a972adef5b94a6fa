//! `$validate` at type and instance level: `POST [base]/{type}/$validate` with the resource (or
//! a `Parameters` of `resource`, `mode`, `profile`), `POST|GET [base]/{type}/{id}/$validate`
//! for the stored resource or a replacement of it. The answer is 200 with an OperationOutcome of
//! every issue, or one informational issue when there is none; only a request that cannot be
//! validated at all is an error.

use actix_web::web;
use actix_web::{HttpRequest, HttpResponse};
use fjord_engine::{Format, ParseLimits, Resource, ValidateMode, ValidateRequest, ValidationIssue};
use serde_json::{json, Value};

use crate::negotiate::{self, body_format, query_pairs};
use crate::resources::{read_body, Ctx};
use crate::{ApiError, AppState};

pub(crate) async fn validate(
    req: &HttpRequest,
    state: &AppState,
    tenant: &str,
    resource_type: &str,
    id: Option<&str>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let ctx = Ctx::new(req, state, tenant).await?;
    let body = read_body(req, payload, ctx.max_body_bytes(state)).await?;
    let mut mode: Option<String> = None;
    let mut profile: Option<String> = None;
    for (name, value) in query_pairs(req) {
        match name.as_str() {
            "mode" => mode = Some(value),
            "profile" => profile = Some(value),
            _ => {}
        }
    }
    let mut resource: Option<(Vec<u8>, Format)> = None;
    if !body.iter().all(u8::is_ascii_whitespace) {
        let format = body_format(req, &body).map_err(|e| ctx.err(e))?;
        match parameters(&body, format, resource_type) {
            Some(parameters) => {
                for parameter in parameters["parameter"].as_array().into_iter().flatten() {
                    let text = |v: &Value| {
                        ["valueCode", "valueString", "valueUri", "valueCanonical"]
                            .iter()
                            .find_map(|k| v[*k].as_str().map(str::to_owned))
                    };
                    match parameter["name"].as_str() {
                        Some("resource") => {
                            let inner =
                                serde_json::to_vec(&parameter["resource"]).unwrap_or_default();
                            resource = Some((inner, Format::Json));
                        }
                        Some("mode") => mode = text(parameter).or(mode),
                        Some("profile") => profile = text(parameter).or(profile),
                        _ => {}
                    }
                }
            }
            None => resource = Some((body.to_vec(), format)),
        }
    }
    let mode = match mode.as_deref() {
        None => ValidateMode::General,
        Some(text) => ValidateMode::parse(text).ok_or_else(|| {
            ctx.err(ApiError::bad_request(format!(
                "mode must be create, update or delete, not '{text}'"
            )))
        })?,
    };
    let request = ValidateRequest {
        resource_type,
        id,
        body: resource
            .as_ref()
            .map(|(bytes, format)| (bytes.as_slice(), *format)),
        mode,
        profile: profile.as_deref(),
    };
    let issues = state
        .engine
        .validate_operation(&ctx.caller, request)
        .await
        .map_err(|e| ctx.err(e))?;
    Ok(negotiate::respond_value(
        HttpResponse::Ok(),
        &outcome(&issues),
        ctx.negotiated,
    ))
}

/// The body as a `Parameters` resource, when it is one and the operation is not about
/// Parameters themselves.
fn parameters(body: &[u8], format: Format, resource_type: &str) -> Option<Value> {
    if resource_type == "Parameters" {
        return None;
    }
    let value = match format {
        Format::Json => serde_json::from_slice::<Value>(body).ok()?,
        Format::Xml => Resource::parse(body, format, &ParseLimits::default())
            .ok()?
            .to_value(),
    };
    (value["resourceType"] == "Parameters").then_some(value)
}

fn outcome(issues: &[ValidationIssue]) -> Value {
    let issues: Vec<Value> = if issues.is_empty() {
        vec![
            json!({ "severity": "information", "code": "informational", "diagnostics": "no issues found" }),
        ]
    } else {
        issues
            .iter()
            .map(|issue| {
                json!({
                    "severity": issue.severity.as_str(),
                    "code": issue.code.as_str(),
                    "diagnostics": issue.message,
                    "expression": [issue.expression],
                })
            })
            .collect()
    };
    json!({ "resourceType": "OperationOutcome", "issue": issues })
}
