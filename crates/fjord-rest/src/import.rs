//! `$import` over HTTP, in the asynchronous request pattern: `POST [base]/$import` with an
//! NDJSON body (`application/fhir+ndjson`) answers 202 with a `Content-Location` to poll, which
//! answers 202 with `X-Progress` while the job runs and 200 with an OperationOutcome once it is
//! done: the counts, then every line that was not stored, by number. `DELETE` on it cancels
//! the job (or forgets a finished one).

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use fjord_engine::ImportJob;
use serde_json::json;

use crate::resources::{read_body, Ctx};
use crate::{jobs, negotiate};
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
    Ok(jobs::accepted(
        &ctx,
        location,
        format!("importing {} lines", job.progress.lines),
    ))
}

pub(crate) async fn status(
    req: &HttpRequest,
    state: &AppState,
    tenant: &str,
    id: &str,
) -> Result<HttpResponse, ApiError> {
    let ctx = Ctx::new(req, state, tenant).await?;
    let job = state.engine.import_job(&ctx.caller, id);
    jobs::status(
        &ctx,
        "import",
        id,
        job,
        |p| format!("{} of {} lines", p.imported.lines(), p.lines),
        |job| negotiate::respond_value(HttpResponse::Ok(), &outcome(job), ctx.negotiated),
    )
}

pub(crate) async fn cancel(
    req: &HttpRequest,
    state: &AppState,
    tenant: &str,
    id: &str,
) -> Result<HttpResponse, ApiError> {
    let ctx = Ctx::new(req, state, tenant).await?;
    let found = state.engine.cancel_import(&ctx.caller, id);
    jobs::cancelled(&ctx, "import", id, found)
}

/// A finished job's counts, then each line that was not stored.
fn outcome(job: &ImportJob) -> serde_json::Value {
    let (lines, imported) = (job.progress.lines, &job.progress.imported);
    let mut issues = vec![json!({
        "severity": "information",
        "code": "informational",
        "diagnostics": format!(
            "{} lines: {} created, {} updated, {} unchanged, {} failed",
            lines, imported.created, imported.updated, imported.unchanged, imported.failed.len()
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
