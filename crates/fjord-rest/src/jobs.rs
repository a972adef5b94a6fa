//! The asynchronous request pattern every background job answers in (`$import`, `$export`,
//! `$reindex`): the kick-off's 202 with a `Content-Location`, the status URL's 202 with
//! `X-Progress` while the job runs, and `DELETE` on it to cancel.

use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use fjord_engine::{Job, JobState};
use serde_json::json;

use crate::negotiate;
use crate::resources::Ctx;
use crate::ApiError;

/// 202 for a job started in the background: where to poll, and what it does.
pub(crate) fn accepted(ctx: &Ctx, location: String, diagnostics: String) -> HttpResponse {
    let outcome = json!({
        "resourceType": "OperationOutcome",
        "issue": [{ "severity": "information", "code": "informational", "diagnostics": diagnostics }],
    });
    let mut response = HttpResponse::Accepted();
    response.insert_header(("Content-Location", location));
    negotiate::respond_value(response, &outcome, ctx.negotiated)
}

/// A job's status: 202 with its progress while it runs, `completed` once it is done, and 500
/// with the error when it failed. `kind` names the job (`import`, `export`, `reindex`).
pub(crate) fn status<P>(
    ctx: &Ctx,
    kind: &str,
    id: &str,
    job: Option<Job<P>>,
    progress: impl FnOnce(&P) -> String,
    completed: impl FnOnce(&Job<P>) -> HttpResponse,
) -> Result<HttpResponse, ApiError> {
    let job = job.ok_or_else(|| ctx.err(no_job(kind, id)))?;
    match &job.state {
        JobState::Running => Ok(HttpResponse::Accepted()
            .insert_header(("X-Progress", progress(&job.progress)))
            .insert_header(("Retry-After", "1"))
            .finish()),
        JobState::Completed => Ok(completed(&job)),
        JobState::Failed(message) => Err(ctx.err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "exception",
            format!(
                "the {kind} job failed after {}: {message}",
                progress(&job.progress)
            ),
        ))),
    }
}

/// The answer to `DELETE` on a job's status URL, `found` telling whether the caller had such a
/// job (now cancelled or forgotten).
pub(crate) fn cancelled(
    ctx: &Ctx,
    kind: &str,
    id: &str,
    found: bool,
) -> Result<HttpResponse, ApiError> {
    if found {
        Ok(HttpResponse::Accepted().finish())
    } else {
        Err(ctx.err(no_job(kind, id)))
    }
}

/// No job `id` of this kind that the caller may see.
fn no_job(kind: &str, id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not-found",
        format!("no {kind} job {id} that you may see (jobs do not outlive a restart)"),
    )
}
