//! `$reindex` over HTTP, in the asynchronous request pattern: `POST [base]/$reindex` or
//! `POST [base]/{type}/$reindex` answers 202 with a `Content-Location` to poll, which answers 202
//! with `X-Progress` while the job runs and 200 once it is done.

use actix_web::{HttpRequest, HttpResponse};
use serde_json::json;

use crate::resources::Ctx;
use crate::{jobs, negotiate};
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
    Ok(jobs::accepted(
        &ctx,
        location,
        format!("reindexing {} resources", job.progress.total),
    ))
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
        .map_err(|e| ctx.err(e))?;
    jobs::status(
        &ctx,
        "reindex",
        job_id,
        job,
        |p| format!("{} of {} resources", p.done, p.total),
        |job| {
            let parameters = json!({
                "resourceType": "Parameters",
                "parameter": [
                    { "name": "types", "valueString": job.progress.types.join(",") },
                    { "name": "reindexed", "valueInteger": job.progress.done },
                ],
            });
            negotiate::respond_value(HttpResponse::Ok(), &parameters, ctx.negotiated)
        },
    )
}
