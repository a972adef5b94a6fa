//! `$reindex` over HTTP, in the asynchronous request pattern: `POST [base]/$reindex` or
//! `POST [base]/{type}/$reindex` answers 202 with a `Content-Location` to poll, which answers 202
//! with `X-Progress` while the job runs and 200 once it is done.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};
use fjord_engine::JobState;
use serde_json::json;

use crate::negotiate;
use crate::resources::Ctx;
use crate::{ApiError, AppState};

pub(crate) async fn start(
    req: &HttpRequest,
    state: &AppState,
    tenant: &str,
    resource_type: Option<&str>,
) -> Result<HttpResponse, ApiError> {
    let ctx = Ctx::new(req, state, tenant).await?;
    let job = state
        .engine
        .start_reindex(&ctx.caller, resource_type)
        .await
        .map_err(|e| ctx.err(e))?;
    let location = format!("{}/$reindex/{}", ctx.base(req), job.id);
    Ok(accepted(
        &ctx,
        location,
        format!("reindexing {} resources", job.total),
    ))
}

/// 202 for a job started in the background: where to poll, and what it does.
/// A running job's status: 202, its progress, and when to ask again.
pub(crate) fn running(progress: String) -> HttpResponse {
    HttpResponse::Accepted()
        .insert_header(("X-Progress", progress))
        .insert_header(("Retry-After", "1"))
        .finish()
}

/// No job `id` of the caller's of this kind (`import`, `export`).
pub(crate) fn no_job(kind: &str, id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not-found",
        format!("no {kind} job {id} of yours (jobs do not outlive a restart)"),
    )
}

pub(crate) fn accepted(ctx: &Ctx, location: String, diagnostics: String) -> HttpResponse {
    let outcome = json!({
        "resourceType": "OperationOutcome",
        "issue": [{ "severity": "information", "code": "informational", "diagnostics": diagnostics }],
    });
    let mut response = HttpResponse::Accepted();
    response.insert_header(("Content-Location", location));
    negotiate::respond_value(response, &outcome, ctx.negotiated)
}

pub(crate) async fn status(
    req: &HttpRequest,
    state: &AppState,
    tenant: &str,
    job_id: &str,
) -> Result<HttpResponse, ApiError> {
    let ctx = Ctx::new(req, state, tenant).await?;
    let job = state
        .engine
        .reindex_job(&ctx.caller, job_id)
        .map_err(|e| ctx.err(e))?
        .ok_or_else(|| {
            ctx.err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not-found",
                format!("no reindex job {job_id} (jobs do not outlive a restart)"),
            ))
        })?;
    let progress = format!("{} of {} resources", job.done, job.total);
    match job.state {
        JobState::Running => {
            let mut response = HttpResponse::Accepted();
            response
                .insert_header(("X-Progress", progress))
                .insert_header(("Retry-After", "1"));
            Ok(response.finish())
        }
        JobState::Completed => {
            let parameters = json!({
                "resourceType": "Parameters",
                "parameter": [
                    { "name": "types", "valueString": job.types.join(",") },
                    { "name": "reindexed", "valueInteger": job.done },
                ],
            });
            Ok(negotiate::respond_value(
                HttpResponse::Ok(),
                &parameters,
                ctx.negotiated,
            ))
        }
        JobState::Failed(message) => Err(ctx.err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "exception",
            format!("the reindex job failed after {progress}: {message}"),
        ))),
    }
}
