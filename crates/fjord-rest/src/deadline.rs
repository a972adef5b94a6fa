//! Request time limits: a request to `/fhir/{tenant}/` that is not answered within its limit
//! (the tenant's `limits.requestTimeoutSeconds` where tighter than the server's) is dropped and
//! answered 503 with issue code `timeout`. Dropping it rolls back its open transaction; the
//! statement it waited on is cancelled by Postgres's `statement_timeout`, which the tenant
//! pools carry at the server's limit. A streamed answer (an export file) is limited only until
//! it starts.

use std::time::Duration;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::web::Data;
use fjord_engine::TenantLimits;

use crate::{ApiError, AppState};

/// A middleware: the rest of the chain, within the request's time limit.
pub(crate) async fn deadline(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let Some(limit) = time_limit(&req).await else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_boxed_body);
    };
    let format = crate::negotiate::lenient(req.request());
    match tokio::time::timeout(limit, next.call(req)).await {
        Ok(answered) => answered.map(ServiceResponse::map_into_boxed_body),
        Err(_) => {
            tracing::warn!(
                limit_seconds = limit.as_secs(),
                "a request ran past its time limit"
            );
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                format!(
                    "the request was not answered within its time limit of {} s and was stopped",
                    limit.as_secs()
                ),
            )
            .in_format(format)
            .into())
        }
    }
}

/// The time limit of a FHIR request: the server's, or its tenant's where tighter.
async fn time_limit(req: &ServiceRequest) -> Option<Duration> {
    crate::router::tenant_of(req.path())?;
    let state = req.app_data::<Data<AppState>>()?;
    let server = state.config.request_timeout?;
    // An unknown tenant is the handler's 404, answered at once.
    let settings = crate::router::tenant_settings(req).await;
    let own = settings.and_then(|s| s.limits.request_timeout_seconds);
    Some(TenantLimits::tighter(server, own.map(Duration::from_secs)))
}
