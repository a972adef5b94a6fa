//! Request metrics: every answer counted and timed by tenant, interaction, resource type and
//! status (`fjord-metrics`), and `/metrics` serving them all in Prometheus's text format.

use std::sync::Arc;
use std::time::Instant;

use actix_web::dev::{Service, ServiceRequest, ServiceResponse};
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use fjord_metrics::{Metrics, RequestLabels, CONTENT_TYPE};

use crate::{ApiError, AppState};

/// What the router found a request to be, left in its extensions for [`measure`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Routed {
    pub interaction: &'static str,
    /// An R4 resource type the path names.
    pub resource_type: Option<&'static str>,
}

/// The tenant a request was resolved to, left in its extensions for [`measure`]: only known
/// tenants become labels, so a stream of made-up tenant names cannot grow the metrics.
#[derive(Debug, Clone)]
pub(crate) struct ResolvedTenant(pub String);

/// Counts and times the answer to every request.
pub(crate) fn measure<S>(
    metrics: Arc<Metrics>,
    req: ServiceRequest,
    service: &S,
) -> impl std::future::Future<Output = Result<ServiceResponse, actix_web::Error>>
where
    S: Service<ServiceRequest, Response = ServiceResponse, Error = actix_web::Error>,
{
    let started = Instant::now();
    let in_flight = metrics.arrived();
    let outside_fhir = unrouted(req.path());
    let answer = service.call(req);
    async move {
        let answer = answer.await;
        let (status, extensions) = match &answer {
            Ok(response) => (response.status(), Some(response.request().extensions())),
            Err(error) => (error.as_response_error().status_code(), None),
        };
        let routed = extensions.as_ref().and_then(|e| e.get::<Routed>().copied());
        let tenant = extensions
            .as_ref()
            .and_then(|e| e.get::<ResolvedTenant>().map(|t| t.0.clone()))
            .unwrap_or_default();
        drop(extensions);
        let labels = RequestLabels {
            tenant,
            interaction: routed.map_or(outside_fhir, |r| r.interaction),
            resource_type: routed
                .and_then(|r| r.resource_type)
                .unwrap_or_default()
                .to_owned(),
            status: status.as_u16(),
        };
        metrics.answered(labels, started.elapsed());
        drop(in_flight);
        answer
    }
}

/// What a request outside `/fhir/` is, for its label.
fn unrouted(path: &str) -> &'static str {
    let first = path
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default();
    match first {
        "admin" => "admin",
        "health" => "health",
        "metrics" => "metrics",
        "auth" => "auth",
        _ => "other",
    }
}

/// `GET /metrics`: open while authentication is off, otherwise for administration tokens (the
/// counts name tenants and their traffic).
pub(crate) async fn render(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    state.config.auth.require_admin(&req).await?;
    for pool in state.engine.store().pool_use() {
        (state.metrics).connections(pool.pool, pool.open, pool.idle, pool.waiting);
    }
    let lags = state.engine.change_log_lags().await;
    for lag in lags.map_err(|e| ApiError::from(e).in_format(Default::default()))? {
        (state.metrics).change_log_lag(&lag.tenant, &lag.consumer, lag.behind);
    }
    Ok(HttpResponse::Ok()
        .content_type(CONTENT_TYPE)
        .body(state.metrics.render()))
}
