//! `$import` over HTTP, in the asynchronous request pattern: `POST [base]/$import` with an
//! NDJSON body (`application/fhir+ndjson`) answers 202 with a `Content-Location` to poll, which
//! answers 202 with `X-Progress` while the job runs and 200 with an OperationOutcome once it is
//! done: the counts, then every line that was not stored, by number. `DELETE` on it cancels
//! the job (or forgets a finished one).

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use fjord_engine::{ImportJob, JobState};
use serde_json::json;

use crate::resources::{read_body, Ctx};
use crate::{negotiate, reindex};
use crate::{ApiError, AppState};

/// Largest NDJSON body `$import` takes (the body is held in memory while it is imported; for
/// larger data sets there is `fjord import`).
pub const MAX_IMPORT_BYTES: usize = 256 << 20;

/// Failed lines an outcome names, at most.
const MAX_LISTED: usize = 1_000;

const NDJSON: [&str; 3] = [
    "application/fhir+ndjson",
    "application/ndjson",
    "application/x-ndjson",
];

pub(crate) async fn start(
    req: &HttpRequest,
    state: &AppState,
    tenant: &str,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let ctx = Ctx::new(req, state, tenant).await?;
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::trim)
        .unwrap_or_default();
    if !NDJSON.contains(&content_type) {
        return Err(ctx.err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "not-supported",
            format!("$import takes NDJSON (application/fhir+ndjson), not '{content_type}'"),
        )));
    }
    let body = read_body(req, payload, MAX_IMPORT_BYTES).await?;
    let job = state.engine.start_import(&ctx.caller, &body);
    let location = format!("{}/$import/{}", ctx.base(req), job.id);
    Ok(reindex::accepted(
        &ctx,
        location,
        format!("importing {} lines", job.lines),
    ))
}

pub(crate) async fn status(
    req: &HttpRequest,
    state: &AppState,
    tenant: &str,
    id: &str,
) -> Result<HttpResponse, ApiError> {
    let ctx = Ctx::new(req, state, tenant).await?;
    let job = state
        .engine
        .import_job(&ctx.caller, id)
        .ok_or_else(|| ctx.err(reindex::no_job("import", id)))?;
    let done = job.imported.lines();
    match &job.state {
        JobState::Running => Ok(reindex::running(format!("{done} of {} lines", job.lines))),
        JobState::Completed => Ok(negotiate::respond_value(
            HttpResponse::Ok(),
            &outcome(&job),
            ctx.negotiated,
        )),
        JobState::Failed(message) => Err(ctx.err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "exception",
            format!(
                "the import failed after {done} of {} lines: {message}",
                job.lines
            ),
        ))),
    }
}

pub(crate) async fn cancel(
    req: &HttpRequest,
    state: &AppState,
    tenant: &str,
    id: &str,
) -> Result<HttpResponse, ApiError> {
    let ctx = Ctx::new(req, state, tenant).await?;
    if state.engine.cancel_import(&ctx.caller, id) {
        Ok(HttpResponse::Accepted().finish())
    } else {
        Err(ctx.err(reindex::no_job("import", id)))
    }
}

/// A finished job's counts, then each line that was not stored.
fn outcome(job: &ImportJob) -> serde_json::Value {
    let imported = &job.imported;
    let mut issues = vec![json!({
        "severity": "information",
        "code": "informational",
        "diagnostics": format!(
            "{} lines: {} created, {} updated, {} unchanged, {} failed",
            job.lines, imported.created, imported.updated, imported.unchanged, imported.failed.len()
        ),
    })];
    for failure in imported.failed.iter().take(MAX_LISTED) {
        let resource = failure
            .resource
            .as_deref()
            .map(|r| format!("{r}: "))
            .unwrap_or_default();
        issues.push(json!({
            "severity": "error",
            "code": "processing",
            "diagnostics": format!("{resource}{}", failure.error),
            "location": [format!("line {}", failure.line)],
        }));
    }
    if imported.failed.len() > MAX_LISTED {
        issues.push(json!({
            "severity": "warning",
            "code": "too-costly",
            "diagnostics": format!("{} more lines failed", imported.failed.len() - MAX_LISTED),
        }));
    }
    json!({ "resourceType": "OperationOutcome", "issue": issues })
}
